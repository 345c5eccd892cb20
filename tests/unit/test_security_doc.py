"""SECURITY.md names the tests that prove each guarantee: every one it names must exist."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "SECURITY.md").read_text()
#: `path.py::test_name` and the shorthand `::test_name` that reuses the previous path.
REFERENCE = re.compile(r"`(tests/[\w/]+\.py)?(?:::(\w+))?`")


def references() -> list[tuple[str, str | None]]:
    found: list[tuple[str, str | None]] = []
    path: str | None = None
    for match in REFERENCE.finditer(DOC):
        path = match.group(1) or path
        if path is not None and (match.group(1) or match.group(2)):
            found.append((path, match.group(2)))
    return found


def test_the_document_names_tests() -> None:
    assert len([name for _, name in references() if name]) >= 20


@pytest.mark.parametrize(("path", "name"), references(), ids=lambda value: str(value))
def test_every_named_test_exists(path: str, name: str | None) -> None:
    source = ROOT / path
    assert source.exists(), f"{path} does not exist"
    if name is None:
        return
    tree = ast.parse(source.read_text())
    defined = {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)}
    assert name in defined, f"{path} has no {name}"
