"""The examples in examples/ are what the CRD admits and the operator reads; the rest is valid Kubernetes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tokensync.models import ClientCredentialSpec

from .test_crd import admit

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
FILES = sorted(EXAMPLES.rglob("*.yaml"))


def documents() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in FILES:
        for number, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if doc:
                found.append((f"{path.relative_to(EXAMPLES)}#{number}", doc))
    return found


DOCS = documents()
CLIENT_CREDENTIALS = [(name, doc) for name, doc in DOCS if doc.get("kind") == "ClientCredential"]
OTHERS = [(name, doc) for name, doc in DOCS if doc.get("kind") != "ClientCredential"]


def test_there_are_examples_for_each_feature() -> None:
    specs = [doc["spec"] for _, doc in CLIENT_CREDENTIALS]
    assert any(s.get("provider", "palisade") == "palisade" for s in specs)
    assert any(s.get("provider") == "oauth2" and s.get("audience") for s in specs)
    assert any((s.get("target") or {}).get("template") for s in specs)
    assert any(s.get("rolloutRestartTargets") for s in specs)


@pytest.mark.parametrize(("name", "doc"), CLIENT_CREDENTIALS, ids=[n for n, _ in CLIENT_CREDENTIALS])
def test_each_client_credential_is_admitted_and_valid(name: str, doc: dict[str, Any]) -> None:
    assert admit(doc) == [], name
    ClientCredentialSpec.model_validate(doc["spec"])


@pytest.mark.parametrize(("name", "doc"), OTHERS, ids=[n for n, _ in OTHERS])
def test_each_other_object_is_valid_kubernetes(name: str, doc: dict[str, Any]) -> None:
    try:
        import kubernetes_validate  # installed by `make tools`, not by the dev extra
    except ImportError:
        pytest.fail("kubernetes-validate is not installed: run `make tools` (scripts/install-tools.sh)", pytrace=False)
    kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)
