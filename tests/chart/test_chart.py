"""The Helm chart: lint, render, schemas, policies, and what each value set must produce.

Three value sets (tests/chart/values/): the defaults (one replica, cluster-wide), watchNamespaces
(Roles per namespace), and HA (three replicas with leader election, ServiceMonitor, NetworkPolicy,
CRD from templates). Each is linted, rendered with `helm template`, validated against the Kubernetes
OpenAPI schemas, scanned with checkov, and held to our own security and RBAC rules; the RBAC is
evaluated the way Kubernetes does (support.rbac_allows).
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from click.testing import CliRunner

from tokensync.cli import run as run_command

from .support import (
    CHART,
    NAMESPACE,
    RELEASE,
    REPO,
    VALUE_SETS,
    VALUES_DIR,
    Rendered,
    helm_template,
    rbac_allows,
    render_set,
    run,
    tool,
)

#: Kinds the chart renders that have no namespace.
CLUSTER_SCOPED_KINDS = {
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
}
#: Kinds whose schema is a CRD's, not Kubernetes' own: kubernetes-validate has no schema for them.
CUSTOM_KINDS = {"ServiceMonitor"}
#: The oldest supported Kubernetes version (Chart.yaml kubeVersion) and the newest kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.30.0", "latest")
CHECKOV_CONFIG = Path(__file__).resolve().parent / "checkov.yaml"

Rule = tuple[str, str, tuple[str, ...]]


def rules_of(role: dict[str, Any]) -> set[Rule]:
    """A Role's rules as (apiGroup, resource, verbs) triples, one per group and resource."""
    triples: set[Rule] = set()
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                triples.add((group, resource, tuple(sorted(rule["verbs"]))))
    return triples


def verbs(*names: str) -> tuple[str, ...]:
    return tuple(sorted(names))


#: What the operator does in each namespace it watches: exactly the calls it makes.
NAMESPACED_RULES: set[Rule] = {
    ("tokensync.io", "clientcredentials", verbs("get", "list", "watch", "patch")),
    ("tokensync.io", "clientcredentials/status", verbs("patch")),
    ("tokensync.io", "clientcredentials/finalizers", verbs("update")),
    ("", "secrets", verbs("get", "list", "watch", "create", "patch", "delete")),
    ("", "configmaps", verbs("get", "list", "watch")),
    ("", "events", verbs("create", "patch")),
}
ROLLOUT_RULES: set[Rule] = {
    ("apps", resource, verbs("get", "patch")) for resource in ("deployments", "statefulsets", "daemonsets")
}
#: Leader election, in the release namespace only.
LEASE_RULES: set[Rule] = {("coordination.k8s.io", "leases", verbs("get", "create", "update"))}
LEASE_ROLE = f"{RELEASE}-leader-election"
#: The credentials-hash key (hashkey.py), in the release namespace only: read by name, created once.
HASH_KEY_SECRET = f"{RELEASE}-hash-key"
HASH_KEY_ROLE = f"{RELEASE}-hash-key"
HASH_KEY_RULES: set[Rule] = {("", "secrets", verbs("get")), ("", "secrets", verbs("create"))}

#: `tokensync run`'s command line as the kopf-free operator defines it: flag -> whether it takes a value.
RUN_FLAGS = {
    "--namespace": True,
    "--all-namespaces": False,
    "--allowed-token-host": True,
    "--log-level": True,
    "--log-format": True,
    "--health-port": True,
    "--metrics-port": True,
    "--workers": True,
    "--max-exchanges-per-host": True,
    "--hash-key-secret": True,
    "--leader-elect": False,
    "--leader-election-namespace": True,
    "--leader-election-id": True,
    "--lease-duration": True,
    "--renew-deadline": True,
    "--retry-period": True,
}
ELECTION_FLAGS = (
    "--leader-elect",
    "--leader-election-namespace",
    "--leader-election-id",
    "--lease-duration",
    "--renew-deadline",
    "--retry-period",
)


def flags(args: list[str]) -> dict[str, str | None]:
    """`--flag=value` and `--flag` arguments as {flag: value or None} (the last one wins)."""
    parsed: dict[str, str | None] = {}
    for arg in args:
        flag, sep, value = arg.partition("=")
        parsed[flag] = value if sep else None
    return parsed


def election_is_on(rendered: Rendered) -> bool:
    return "--leader-elect" in rendered.args


# --- lint and render --------------------------------------------------------------------------------


@pytest.mark.parametrize("strict", [False, True], ids=["lint", "lint-strict"])
def test_helm_lint_is_clean(value_set: str, strict: bool) -> None:
    args = [tool("helm"), "lint", CHART, "--namespace", NAMESPACE, "--values", VALUES_DIR / f"{value_set}.yaml"]
    result = run([*args, "--strict"] if strict else args)
    assert "0 chart(s) failed" in result.stdout
    assert "[WARNING]" not in result.stdout, result.stdout
    assert "[ERROR]" not in result.stdout, result.stdout


def test_helm_template_renders_every_value_set(rendered: Rendered) -> None:
    kinds = {d["kind"] for d in rendered.docs}
    assert {"ServiceAccount", "Deployment", "Service"} <= kinds
    assert kinds & {"ClusterRole", "Role"}
    for doc in rendered.docs:
        assert doc["metadata"]["name"], doc
        if doc["kind"] not in CLUSTER_SCOPED_KINDS:
            assert doc["metadata"].get("namespace"), f"{doc['kind']} {doc['metadata']['name']} has no namespace"
    # The kopf peering objects, their CRD and the hook that created them are gone.
    assert not any(d["apiVersion"].startswith("kopf.dev/") for d in rendered.docs)
    assert "kopf.dev" not in rendered.text
    assert not any("helm.sh/hook" in d["metadata"].get("annotations", {}) for d in rendered.docs)


def test_every_object_has_the_standard_labels(rendered: Rendered) -> None:
    for doc in rendered.docs:
        labels = doc["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/name") == "tokensync", doc["metadata"]
        assert labels.get("app.kubernetes.io/instance") == RELEASE
        assert labels.get("app.kubernetes.io/version") == "0.2.0"
        assert labels.get("app.kubernetes.io/managed-by") == "Helm"
        assert labels.get("helm.sh/chart") == "tokensync-0.2.0"


def test_notes_tell_the_user_what_to_apply_next(value_set: str) -> None:
    result = run(
        [
            tool("helm"),
            "install",
            RELEASE,
            CHART,
            "--dry-run=client",
            "--namespace",
            NAMESPACE,
            "--values",
            str(VALUES_DIR / f"{value_set}.yaml"),
        ]
    )
    notes = result.stdout.split("NOTES:", 1)[1]
    assert "create secret generic" in notes
    assert "kind: ClientCredential" in notes
    assert "kubectl" in notes
    assert "wait --for=condition=Ready clientcredential/" in notes
    # Only with leader election: where the Lease is and how to see the leader.
    assert (f"get lease {RELEASE}" in notes) is (value_set == "ha"), notes
    assert "peering" not in notes


# --- schemas and policies --------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifests_match_the_kubernetes_openapi_schemas(rendered: Rendered, version: str) -> None:
    try:
        import kubernetes_validate  # installed by `make tools`, not by the dev extra
    except ImportError:
        pytest.fail("kubernetes-validate is not installed: run `make tools` (scripts/install-tools.sh)", pytrace=False)
    if version == "latest":
        version = kubernetes_validate.latest_version()
    checked = 0
    for doc in rendered.docs:
        if doc["kind"] in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{doc['kind']} {doc['metadata']['name']} ({rendered.name}, {version}): {exc.message}")
        checked += 1
    assert checked >= 5


@pytest.fixture(scope="module")
def checkov_reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """checkov is slow to start: one run per value set for the whole module."""
    reports = {}
    for name in VALUE_SETS:
        directory = tmp_path_factory.mktemp(f"checkov-{name}")
        (directory / "rendered.yaml").write_text(render_set(name).text)
        result = run([tool("checkov"), "--config-file", CHECKOV_CONFIG, "-d", directory, "-o", "json"], check=False)
        try:
            report = json.loads(result.stdout)
        except json.JSONDecodeError:
            pytest.fail(f"checkov ({name}) printed no JSON report:\n{result.stdout}\n{result.stderr}", pytrace=False)
        reports[name] = report
    return reports


def test_checkov_finds_nothing(checkov_reports: dict[str, dict[str, Any]], value_set: str) -> None:
    report = checkov_reports[value_set]
    assert report["check_type"] == "kubernetes"
    failed = [f"{c['check_id']} {c['check_name']}: {c['resource']}" for c in report["results"].get("failed_checks", [])]
    assert not failed, "\n".join(failed)
    assert report["summary"]["parsing_errors"] == 0
    assert report["summary"]["passed"] > 50


def test_every_checkov_skip_is_justified() -> None:
    lines = CHECKOV_CONFIG.read_text().splitlines()
    skips = [i for i, line in enumerate(lines) if re.match(r"\s*- CKV2?_K8S_\d+\s*$", line)]
    assert skips, "no skipped checks found: update this test"
    for i in skips:
        comment = lines[i - 1].strip()
        assert comment.startswith("#"), f"{lines[i].strip()} has no justification on the line above it"
        assert len(comment) > 20, f"{lines[i].strip()}: justify it in a sentence"
    assert len(skips) == len(yaml.safe_load(CHECKOV_CONFIG.read_text())["skip-check"])


def test_pods_run_locked_down(rendered: Rendered) -> None:
    pod = rendered.pod_spec
    container = rendered.container
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["runAsGroup"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["runAsUser"] == 65532
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["privileged"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is True
    assert pod["terminationGracePeriodSeconds"] == 45
    assert "hostNetwork" not in pod
    assert "hostPID" not in pod


def test_resources_probes_and_writable_tmp(rendered: Rendered) -> None:
    container = rendered.container
    assert container["resources"] == {
        "requests": {"cpu": "50m", "memory": "128Mi"},
        "limits": {"cpu": "500m", "memory": "384Mi"},
    }
    # Liveness: the process works; readiness: the informer caches have synced (on standbys too).
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert "--health-port=8081" in rendered.args
    assert "--metrics-port=8080" in rendered.args
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"metrics": 8080, "health": 8081}
    assert container["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]  # noqa: S108 - a path in the pod
    assert rendered.pod_spec["volumes"] == [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}]
    assert container["image"] == "ghcr.io/tokensync/tokensync:0.2.0"


def test_no_wildcard_in_any_rbac_rule(rendered: Rendered) -> None:
    roles = rendered.of_kind("ClusterRole") + rendered.of_kind("Role")
    assert roles
    for role in roles:
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert all("*" not in item for item in rule[field]), f"{role['metadata']['name']}: {rule}"
            assert "resourceNames" not in rule or all("*" not in n for n in rule["resourceNames"])
            assert "nonResourceURLs" not in rule


def test_the_metrics_service_selects_the_operator_pods(rendered: Rendered) -> None:
    service = rendered.one("Service")
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}]
    pod_labels = rendered.deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert rendered.deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_the_operator_arguments_follow_the_run_command_line(rendered: Rendered) -> None:
    """Every argument is a `tokensync run` flag, with a value exactly when the flag takes one."""
    assert rendered.container["command"] == ["tokensync"]
    assert rendered.args[0] == "run"
    for arg in rendered.args[1:]:
        flag, sep, value = arg.partition("=")
        assert flag in RUN_FLAGS, f"{arg}: not a flag of the kopf-free `tokensync run`"
        assert bool(sep) is RUN_FLAGS[flag], f"{arg}: {flag} {'takes' if RUN_FLAGS[flag] else 'takes no'} value"
        assert value or not sep, arg
    parsed = flags(rendered.args[1:])
    assert parsed["--health-port"] == "8081"
    assert parsed["--metrics-port"] == "8080"
    assert parsed["--workers"] == "16"
    assert ("--namespace" in parsed) is not ("--all-namespaces" in parsed)


def test_the_operator_arguments_parse_with_the_real_cli(rendered: Rendered) -> None:
    """Every flag the chart passes exists in `tokensync run`, with a valid value."""
    options = {opt: p for p in run_command.params if isinstance(p, click.Option) for opt in p.opts}
    for flag, takes_value in RUN_FLAGS.items():
        assert flag in options, f"`tokensync run` has no {flag}"
        assert options[flag].is_flag is not takes_value, flag
    with run_command.make_context("run", list(rendered.args[1:])) as ctx:
        params = ctx.params

    def value(flag: str) -> Any:
        name = options[flag].name
        assert name is not None
        return params[name]

    assert tuple(value("--allowed-token-host")) == ("api.palisade.co", "api.sandbox.palisade.co")
    assert value("--log-level") == "info"
    assert value("--log-format") == "json"
    assert value("--health-port") == 8081
    assert value("--metrics-port") == 8080
    assert value("--workers") == 16
    assert value("--leader-elect") is election_is_on(rendered)
    if election_is_on(rendered):
        assert value("--leader-election-namespace") == NAMESPACE
        assert value("--leader-election-id") == RELEASE
        assert (value("--lease-duration"), value("--renew-deadline"), value("--retry-period")) == (15, 10, 2)
    # The help text is where a user looks: the chart must not rely on a hidden flag.
    help_text = CliRunner().invoke(run_command, ["--help"]).output
    for flag in flags(rendered.args[1:]):
        assert flag in help_text, flag


# --- what each value set must produce ---------------------------------------------------------------


def test_defaults_one_replica_cluster_wide_no_leader_election() -> None:
    rendered = render_set("default")
    deployment = rendered.deployment
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert not rendered.of_kind("PodDisruptionBudget")
    assert "--all-namespaces" in rendered.args
    assert not any(a.startswith("--namespace") for a in rendered.args)
    assert not set(flags(rendered.args)) & set(ELECTION_FLAGS)
    assert not rendered.of_kind("CustomResourceDefinition")
    assert not rendered.of_kind("ServiceMonitor")
    assert not rendered.of_kind("NetworkPolicy")
    assert "affinity" not in rendered.pod_spec
    role = rendered.one("ClusterRole")
    assert rules_of(role) == NAMESPACED_RULES
    binding = rendered.one("ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "tokensync", "namespace": NAMESPACE}]
    # One Role: the credentials-hash key's, in the release namespace.
    hash_key = rendered.one("Role")
    assert (hash_key["metadata"]["name"], hash_key["metadata"]["namespace"]) == (HASH_KEY_ROLE, NAMESPACE)
    assert rules_of(hash_key) == HASH_KEY_RULES
    assert rendered.one("RoleBinding")["roleRef"]["name"] == HASH_KEY_ROLE
    assert flags(rendered.args)["--hash-key-secret"] == HASH_KEY_SECRET
    assert [a for a in rendered.args if a.startswith("--allowed-token-host")] == [
        "--allowed-token-host=api.palisade.co",
        "--allowed-token-host=api.sandbox.palisade.co",
    ]


def test_watch_namespaces_gets_a_role_per_namespace_and_namespace_flags() -> None:
    rendered = render_set("namespaced")
    roles = {r["metadata"]["namespace"]: r for r in rendered.of_kind("Role") if r["metadata"]["name"] != HASH_KEY_ROLE}
    bindings = {
        b["metadata"]["namespace"]: b for b in rendered.of_kind("RoleBinding") if b["metadata"]["name"] != HASH_KEY_ROLE
    }
    assert set(roles) == set(bindings) == {"team-a", "team-b"}
    for namespace, role in roles.items():
        assert rules_of(role) == NAMESPACED_RULES, namespace
        binding = bindings[namespace]
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": role["metadata"]["name"],
        }
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "tokensync", "namespace": NAMESPACE}]
    # Nothing cluster-scoped at all: no CRD discovery, no peering, no Namespace access.
    assert not rendered.of_kind("ClusterRole")
    assert not rendered.of_kind("ClusterRoleBinding")
    assert [a for a in rendered.args if a.startswith("--namespace")] == ["--namespace=team-a", "--namespace=team-b"]
    assert "--all-namespaces" not in rendered.args


def test_ha_has_leader_election_a_pdb_and_rolling_updates() -> None:
    rendered = render_set("ha")
    deployment = rendered.deployment
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
    pdb = rendered.one("PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    parsed = flags(rendered.args)
    assert parsed["--leader-elect"] is None, "a boolean flag"
    assert parsed["--leader-election-namespace"] == NAMESPACE, "where the leader-election Role is"
    assert parsed["--leader-election-id"] == RELEASE
    assert (parsed["--lease-duration"], parsed["--renew-deadline"], parsed["--retry-period"]) == ("15", "10", "2")
    assert "--all-namespaces" in rendered.args
    assert rules_of(rendered.one("ClusterRole")) == NAMESPACED_RULES
    assert rules_of(rendered.one("Role", LEASE_ROLE)) == LEASE_RULES
    # Several replicas spread over nodes.
    anti = rendered.pod_spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert anti[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"


def test_the_pods_know_their_name_and_namespace(rendered: Rendered) -> None:
    """POD_NAME is the election identity, POD_NAMESPACE the default Lease namespace: in every mode."""
    env = {e["name"]: e for e in rendered.container["env"]}
    assert env["POD_NAME"] == {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
    assert env["POD_NAMESPACE"] == {
        "name": "POD_NAMESPACE",
        "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
    }
    assert "POD_ID" not in env, "kopf's peer identity is gone"


def test_ha_metrics_objects() -> None:
    rendered = render_set("ha")
    monitor = rendered.one("ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    service = rendered.one("Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}


def test_ha_network_policy_allows_only_what_the_operator_needs() -> None:
    policy = render_set("ha").one("NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert [r["ports"] for r in policy["ingress"]] == [
        [{"port": "metrics", "protocol": "TCP"}],
        [{"port": "health", "protocol": "TCP"}],
    ]
    dns, api, token = policy["egress"]
    assert dns == {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}
    assert api["to"] == [{"ipBlock": {"cidr": "10.96.0.1/32"}}, {"ipBlock": {"cidr": "192.0.2.10/32"}}]
    assert api["ports"] == [{"port": 443, "protocol": "TCP"}, {"port": 6443, "protocol": "TCP"}]
    assert token["to"] == [{"ipBlock": {"cidr": "203.0.113.0/24"}}]
    assert token["ports"] == [{"port": 443, "protocol": "TCP"}]


def test_ha_renders_the_crd_from_templates_when_asked() -> None:
    rendered = render_set("ha")
    templated = rendered.one("CustomResourceDefinition", "clientcredentials.tokensync.io")
    shipped = yaml.safe_load((CHART / "crds" / "tokensync.io_clientcredentials.yaml").read_text())
    assert templated["spec"] == shipped["spec"]
    assert templated["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    assert shipped["metadata"]["labels"].items() <= templated["metadata"]["labels"].items()
    assert "clientcredentials.tokensync.io" not in render_set("default").text


@pytest.mark.parametrize(
    "extra",
    [
        (),
        ("--set", "replicaCount=2"),
        ("--set", "leaderElection.enabled=true"),
        ("--values", VALUES_DIR / "namespaced.yaml"),
        ("--values", VALUES_DIR / "namespaced.yaml", "--set", "replicaCount=2"),
        ("--values", VALUES_DIR / "namespaced.yaml", "--set", "leaderElection.enabled=true"),
        # The release namespace is watched too: its Role and the Lease Role must not collide.
        ("--set", f"watchNamespaces={{team-a,{NAMESPACE}}}", "--set", "replicaCount=2"),
    ],
    ids=lambda v: " ".join(map(str, v)).replace(str(VALUES_DIR) + "/", "") or "default",
)
def test_leader_election_flags_and_lease_role_only_with_election(extra: tuple[str, ...]) -> None:
    rendered = helm_template(*extra)
    on = "replicaCount=2" in extra or "leaderElection.enabled=true" in extra
    assert election_is_on(rendered) is on
    present = {f for f in flags(rendered.args) if f in ELECTION_FLAGS}
    assert present == (set(ELECTION_FLAGS) if on else set())
    lease_roles = [r for r in rendered.of_kind("Role") + rendered.of_kind("ClusterRole") if rules_of(r) & LEASE_RULES]
    lease_bindings = [b for b in rendered.of_kind("RoleBinding") if b["roleRef"]["name"] == LEASE_ROLE]
    if not on:
        assert not lease_roles
        assert not lease_bindings
        return
    # One Role, in the release namespace, with nothing but the Lease rules, bound to the operator.
    assert [(r["kind"], r["metadata"].get("namespace"), r["metadata"]["name"]) for r in lease_roles] == [
        ("Role", NAMESPACE, LEASE_ROLE)
    ]
    assert rules_of(lease_roles[0]) == LEASE_RULES
    (binding,) = lease_bindings
    assert binding["metadata"]["namespace"] == NAMESPACE
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": LEASE_ROLE}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "tokensync", "namespace": NAMESPACE}]
    names = [(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in rendered.docs]
    assert len(names) == len(set(names)), "two objects with one name"


def test_leader_election_with_one_replica_rolls_but_has_no_pdb() -> None:
    """leaderElection.enabled before `kubectl scale`: a standby can take over, so updates roll."""
    rendered = helm_template("--set", "leaderElection.enabled=true")
    assert rendered.deployment["spec"]["replicas"] == 1
    assert rendered.deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
    assert not rendered.of_kind("PodDisruptionBudget")
    assert "affinity" not in rendered.pod_spec


def test_leader_election_timings_and_workers_reach_the_flags() -> None:
    rendered = helm_template(
        "--set",
        "replicaCount=2",
        "--set",
        "leaderElection.leaseDuration=30",
        "--set",
        "leaderElection.renewDeadline=20",
        "--set",
        "leaderElection.retryPeriod=5",
        "--set",
        "workers=4",
        "--set",
        "fullnameOverride=ts",
    )
    parsed = flags(rendered.args)
    assert (parsed["--lease-duration"], parsed["--renew-deadline"], parsed["--retry-period"]) == ("30", "20", "5")
    assert parsed["--workers"] == "4"
    # The Lease is named after the release's objects, so two releases in one namespace never share it.
    assert parsed["--leader-election-id"] == "ts"
    assert rendered.one("Role", "ts-leader-election")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            ["leaderElection.leaseDuration=10", "leaderElection.renewDeadline=10"],
            "leaderElection.renewDeadline (10) must be less than leaderElection.leaseDuration (10)",
        ),
        (
            ["leaderElection.renewDeadline=12", "leaderElection.leaseDuration=11", "leaderElection.retryPeriod=2"],
            "leaderElection.renewDeadline (12) must be less than leaderElection.leaseDuration (11)",
        ),
        (
            ["leaderElection.retryPeriod=10"],
            "leaderElection.retryPeriod (10) must be less than leaderElection.renewDeadline (10)",
        ),
    ],
)
def test_leader_election_timings_must_nest(settings: list[str], message: str) -> None:
    """JSON schema cannot compare two values: the template refuses them, with or without election."""
    args = [a for s in settings for a in ("--set", s)]
    result = run([tool("helm"), "template", RELEASE, CHART, *args], check=False)
    assert result.returncode != 0, f"helm accepted {settings}"
    assert message in result.stderr, result.stderr


def test_rollout_restart_rbac_only_when_enabled() -> None:
    assert not rules_of(render_set("default").one("ClusterRole")) & ROLLOUT_RULES
    rendered = helm_template("--set", "rolloutRestart.enabled=true")
    assert rules_of(rendered.one("ClusterRole")) == NAMESPACED_RULES | ROLLOUT_RULES
    rendered = helm_template("--values", VALUES_DIR / "namespaced.yaml", "--set", "rolloutRestart.enabled=true")
    for role in rendered.of_kind("Role"):
        if role["metadata"]["name"] != HASH_KEY_ROLE:
            assert rules_of(role) == NAMESPACED_RULES | ROLLOUT_RULES
    assert not rendered.of_kind("ClusterRole")


def test_no_rbac_objects_without_rbac_create() -> None:
    for extra in ((), ("--set", "replicaCount=2"), ("--values", VALUES_DIR / "namespaced.yaml")):
        rendered = helm_template("--set", "rbac.create=false", *extra)
        assert not [d for d in rendered.docs if d["apiVersion"].startswith("rbac.authorization.k8s.io/")]


def test_image_values() -> None:
    rendered = helm_template(
        "--set", "image.tag=1.2.3", "--set", "image.pullPolicy=Always", "--set", "image.pullSecrets={regcred}"
    )
    assert rendered.container["image"] == "ghcr.io/tokensync/tokensync:1.2.3"
    assert rendered.container["imagePullPolicy"] == "Always"
    assert rendered.pod_spec["imagePullSecrets"] == [{"name": "regcred"}]
    digest = "sha256:" + "a" * 64
    rendered = helm_template("--set", f"image.digest={digest}")
    assert rendered.container["image"] == f"ghcr.io/tokensync/tokensync@{digest}"


def test_pod_scheduling_and_extra_values(tmp_path: Path) -> None:
    values = {
        "allowedTokenHosts": ["tokens.example.com"],
        "logLevel": "debug",
        "logFormat": "text",
        "podAnnotations": {"a": "b"},
        "podLabels": {"team": "payments"},
        "extraEnv": [{"name": "TZ", "value": "UTC"}],
        "workers": 32,
        "extraArgs": ["--max-exchanges-per-host=4"],
        "priorityClassName": "system-cluster-critical",
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {}},
    }
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    rendered = helm_template("--values", path)
    pod = rendered.pod_spec
    assert rendered.deployment["spec"]["template"]["metadata"]["annotations"] == {"a": "b"}
    assert rendered.deployment["spec"]["template"]["metadata"]["labels"]["team"] == "payments"
    assert rendered.container["env"][-1] == {"name": "TZ", "value": "UTC"}
    assert pod["priorityClassName"] == "system-cluster-critical"
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert pod["tolerations"] == values["tolerations"]
    assert pod["affinity"] == {"nodeAffinity": {}}
    assert "--allowed-token-host=tokens.example.com" in rendered.args
    assert "--log-level=debug" in rendered.args
    assert "--log-format=text" in rendered.args
    assert "--workers=32" in rendered.args
    assert rendered.args[-1] == "--max-exchanges-per-host=4"


# --- RBAC, evaluated the way Kubernetes does ----------------------------------------------------------

Permission = tuple[str, str, str]  # (verb, API group, resource)


def permissions(rules: set[Rule]) -> set[Permission]:
    return {(verb, group, resource) for group, resource, verbs_ in rules for verb in verbs_}


#: Requests the old kopf operator made, or that no version should make: never granted.
FORBIDDEN: set[Permission] = {
    ("list", "", "namespaces"),
    ("watch", "", "namespaces"),
    ("get", "apiextensions.k8s.io", "customresourcedefinitions"),
    ("list", "apiextensions.k8s.io", "customresourcedefinitions"),
    ("list", "kopf.dev", "clusterkopfpeerings"),
    ("patch", "kopf.dev", "kopfpeerings"),
    ("update", "tokensync.io", "clientcredentials/status"),
    ("get", "tokensync.io", "clientcredentials/status"),
    ("create", "events.k8s.io", "events"),
    ("list", "coordination.k8s.io", "leases"),
    ("watch", "coordination.k8s.io", "leases"),
    ("delete", "coordination.k8s.io", "leases"),
    ("update", "", "secrets"),
    ("deletecollection", "", "secrets"),
    ("create", "", "configmaps"),
    ("list", "", "pods"),
}
ALL_VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")
OTHER_NAMESPACE = "elsewhere"


def expected_permissions(
    namespace: str, watched: tuple[str, ...] | None, *, election: bool, rollout: bool = False
) -> set[Permission]:
    """What the operator may do in a namespace ("" = cluster scope); watched None means cluster-wide."""
    allowed: set[Permission] = set()
    if (watched is None) or (namespace in watched):
        allowed |= permissions(NAMESPACED_RULES | (ROLLOUT_RULES if rollout else set()))
    if election and namespace == NAMESPACE:
        allowed |= permissions(LEASE_RULES)
    if namespace == NAMESPACE:
        # Its credentials-hash key: created once (the named GET is checked on its own).
        allowed |= {("create", "", "secrets")}
    return allowed


@pytest.mark.parametrize(
    ("extra", "watched", "election", "rollout"),
    [
        ((), None, False, False),
        (("--set", "replicaCount=3"), None, True, False),
        (("--set", "leaderElection.enabled=true", "--set", "rolloutRestart.enabled=true"), None, True, True),
        (("--values", VALUES_DIR / "namespaced.yaml"), ("team-a", "team-b"), False, False),
        (("--values", VALUES_DIR / "namespaced.yaml", "--set", "replicaCount=2"), ("team-a", "team-b"), True, False),
        (
            ("--set", f"watchNamespaces={{team-a,{NAMESPACE}}}", "--set", "leaderElection.enabled=true"),
            ("team-a", NAMESPACE),
            True,
            False,
        ),
        (
            ("--values", VALUES_DIR / "namespaced.yaml", "--set", "rolloutRestart.enabled=true"),
            ("team-a", "team-b"),
            False,
            True,
        ),
    ],
    ids=[
        "cluster",
        "cluster-ha",
        "cluster-election-rollout",
        "namespaced",
        "namespaced-ha",
        "namespaced-incl-release-ns",
        "namespaced-rollout",
    ],
)
def test_rbac_grants_exactly_what_the_operator_calls(
    extra: tuple[str, ...], watched: tuple[str, ...] | None, election: bool, rollout: bool
) -> None:
    """Every request the operator makes is allowed, in the right namespaces only, and nothing else is.

    The candidate requests are every verb on every resource any rendered rule names, plus the old
    kopf operator's requests: the rules hold no wildcards (test_no_wildcard_in_any_rbac_rule), so
    nothing outside these can be granted.
    """
    rendered = helm_template(*extra)
    named = {
        (group, resource)
        for kind in ("Role", "ClusterRole")
        for role in rendered.of_kind(kind)
        for group, resource, _ in rules_of(role)
    }
    candidates = {(verb, group, resource) for group, resource in named for verb in ALL_VERBS} | FORBIDDEN
    namespaces = ("team-a", "team-b", NAMESPACE, OTHER_NAMESPACE, "")
    for namespace in namespaces:
        allowed = {
            (verb, group, resource)
            for verb, group, resource in candidates
            if rbac_allows(rendered.docs, RELEASE, NAMESPACE, verb, group, resource, namespace)
        }
        expected = expected_permissions(namespace, watched, election=election, rollout=rollout)
        assert allowed == expected, (
            f"namespace {namespace!r}: granted but not needed {sorted(allowed - expected)}; "
            f"needed but not granted {sorted(expected - allowed)}"
        )
        assert not allowed & FORBIDDEN
    if watched is not None:
        # watchNamespaces: nothing cluster-scoped at all.
        assert not rendered.of_kind("ClusterRole")
        assert not rendered.of_kind("ClusterRoleBinding")


@pytest.mark.parametrize("extra", [(), ("--values", VALUES_DIR / "namespaced.yaml")], ids=["cluster", "namespaced"])
def test_the_hash_key_is_readable_by_name_in_the_release_namespace_only(extra: tuple[str, ...]) -> None:
    docs = helm_template(*extra).docs
    assert rbac_allows(docs, RELEASE, NAMESPACE, "get", "", "secrets", NAMESPACE, name=HASH_KEY_SECRET)
    if extra:  # watchNamespaces: no other Secret of the release namespace is readable
        assert not rbac_allows(docs, RELEASE, NAMESPACE, "get", "", "secrets", NAMESPACE, name="someone-elses")
        assert not rbac_allows(docs, RELEASE, NAMESPACE, "list", "", "secrets", NAMESPACE)


def test_rbac_is_for_the_operator_service_account_only() -> None:
    docs = helm_template("--set", "replicaCount=2", "--set", "serviceAccount.name=robot").docs
    for namespace in ("team-a", ""):
        assert rbac_allows(docs, "robot", NAMESPACE, "list", "", "secrets", namespace)
        assert not rbac_allows(docs, RELEASE, NAMESPACE, "list", "", "secrets", namespace)
        assert not rbac_allows(docs, "robot", "default", "list", "", "secrets", namespace)
    assert rbac_allows(docs, "robot", NAMESPACE, "update", "coordination.k8s.io", "leases", NAMESPACE)
    assert not rbac_allows(docs, "robot", NAMESPACE, "update", "coordination.k8s.io", "leases", "team-a")


# --- values.schema.json ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ("replicaCount: three", "at '/replicaCount': got string, want integer"),
        ("replicaCount: 0", "/replicaCount"),
        ("nosuchkey: 1", "additional properties 'nosuchkey' not allowed"),
        ("logLevel: verbose", "at '/logLevel': value must be one of"),
        ("logFormat: xml", "/logFormat"),
        ("image: {repository: x, pullPolicy: Sometimes}", "/image/pullPolicy"),
        ("image: {repository: x, pullPolicy: Always, tga: latest}", "additional properties 'tga' not allowed"),
        ("watchNamespaces: ['Team_A']", "/watchNamespaces/0"),
        ("allowedTokenHosts: []", "/allowedTokenHosts"),
        ("allowedTokenHosts: ['https://api.palisade.co']", "/allowedTokenHosts/0"),
        ("networkPolicy: {enabled: true}", "/networkPolicy/apiServerCIDRs"),
        (
            "networkPolicy: {enabled: true, apiServerCIDRs: [10.0.0.1/32], tokenHostCIDRs: [example.com]}",
            "/networkPolicy/tokenHostCIDRs/0",
        ),
        ("crds: {asTemplates: 'yes'}", "/crds/asTemplates"),
        ("serviceMonitor: {interval: soon}", "/serviceMonitor/interval"),
        ("ha: {enabled: true}", "additional properties 'ha' not allowed"),
        ("leaderElection: {enabled: 'yes'}", "/leaderElection/enabled"),
        ("leaderElection: {leaseDuration: 15s}", "/leaderElection/leaseDuration"),
        ("leaderElection: {retryPeriod: 0}", "/leaderElection/retryPeriod"),
        ("leaderElection: {renewDeadline: 1.5}", "/leaderElection/renewDeadline"),
        ("leaderElection: {leaseDuration: null}", "/leaderElection"),
        ("leaderElection: {peering: true}", "additional properties 'peering' not allowed"),
        ("workers: 0", "/workers"),
        ("workers: many", "/workers"),
    ],
    ids=lambda v: v if len(v) < 40 else v[:40],
)
def test_values_schema_rejects_bad_values(tmp_path: Path, values: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(values + "\n")
    result = run([tool("helm"), "template", RELEASE, CHART, "--values", path], check=False)
    assert result.returncode != 0, f"helm accepted {values!r}"
    assert "values don't meet the specifications of the schema" in result.stderr, result.stderr
    assert message in result.stderr, result.stderr


def test_values_schema_is_strict_and_covers_every_value() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert schema["additionalProperties"] is False
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def walk(node: dict[str, Any], schema_node: dict[str, Any], path: str) -> None:
        for key, value in node.items():
            assert key in schema_node.get("properties", {}), f"{path}{key} is not in values.schema.json"
            child = schema_node["properties"][key]
            if isinstance(value, dict) and child.get("additionalProperties") is False:
                walk(value, child, f"{path}{key}.")

    walk(values, schema, "")


def test_readme_documents_every_value() -> None:
    readme = (CHART / "README.md").read_text()
    table = readme.split("\n## Values\n", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([^`]+)` \|", table, flags=re.MULTILINE))
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def leaves(node: dict[str, Any], prefix: str = "") -> list[str]:
        out = []
        for key, value in node.items():
            if isinstance(value, dict) and value and key not in {"podSecurityContext", "securityContext", "resources"}:
                out += leaves(value, f"{prefix}{key}.")
            else:
                out.append(f"{prefix}{key}")
        return out

    missing = [leaf for leaf in leaves(values) if leaf not in documented]
    assert not missing, f"values missing from helm/tokensync/README.md: {missing}"
    stale = [key for key in documented if key not in leaves(values)]
    assert not stale, f"README.md documents values that do not exist: {stale}"


# --- the chart matches the project ---------------------------------------------------------------------


def test_chart_crd_is_byte_identical_to_the_generated_one() -> None:
    chart_crd = (CHART / "crds" / "tokensync.io_clientcredentials.yaml").read_bytes()
    top_crd = (REPO / "crds" / "tokensync.io_clientcredentials.yaml").read_bytes()
    assert chart_crd == top_crd, "helm/tokensync/crds/ differs from crds/: run `make crds`"
    assert sorted(p.name for p in (CHART / "crds").iterdir()) == ["tokensync.io_clientcredentials.yaml"]


def test_chart_versions_follow_the_package() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert chart["apiVersion"] == "v2"
    assert chart["appVersion"] == project["version"]
    assert chart["version"] == "0.2.0"
    assert chart["name"] == "tokensync"


def test_the_plain_manifests_are_the_chart_rendered_with_defaults() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("render_manifests", REPO / "scripts" / "render_manifests.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    committed = (REPO / "deploy" / "tokensync.yaml").read_text()
    assert committed == module.render(), "deploy/tokensync.yaml is out of date: run `make manifests`"
    kinds = [doc["kind"] for doc in yaml.safe_load_all(committed) if doc]
    assert kinds[:2] == ["Namespace", "CustomResourceDefinition"]
    assert "Deployment" in kinds
