"""The Helm chart: lint, render, schemas, policies, and what each value set must produce.

Three value sets (tests/chart/values/): the defaults (one replica, cluster-wide), watchNamespaces
(Roles per namespace), and HA (three peered replicas, ServiceMonitor, NetworkPolicy, CRD from
templates). Each is linted, rendered with `helm template`, validated against the Kubernetes OpenAPI
schemas, scanned with checkov, and held to our own security and RBAC rules.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

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
    render_set,
    run,
    tool,
)

#: Kinds whose schema is a CRD's, not Kubernetes' own: kubernetes-validate has no schema for them.
CUSTOM_KINDS = {"ServiceMonitor", "ClusterKopfPeering", "KopfPeering"}
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


NAMESPACED_RULES: set[Rule] = {
    ("tokensync.io", "clientcredentials", verbs("get", "list", "watch", "patch")),
    ("tokensync.io", "clientcredentials/status", verbs("get", "patch", "update")),
    ("tokensync.io", "clientcredentials/finalizers", verbs("update")),
    ("", "secrets", verbs("get", "list", "watch", "create", "patch")),
    ("", "configmaps", verbs("get")),
    ("", "events", verbs("create", "patch")),
    ("events.k8s.io", "events", verbs("create", "patch")),
}
CRD_DISCOVERY_RULES: set[Rule] = {
    ("apiextensions.k8s.io", "customresourcedefinitions", verbs("get", "list", "watch")),
}
ROLLOUT_RULES: set[Rule] = {
    ("apps", resource, verbs("get", "patch")) for resource in ("deployments", "statefulsets", "daemonsets")
}


def peering_rules(plural: str) -> set[Rule]:
    return {("kopf.dev", plural, verbs("get", "list", "watch", "patch"))}


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
    assert {"ServiceAccount", "Deployment", "Service", "ClusterRole", "ClusterRoleBinding"} <= kinds
    for doc in rendered.docs:
        assert doc["metadata"]["name"], doc
        if doc["kind"] not in {"ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "ClusterKopfPeering"}:
            assert doc["metadata"].get("namespace"), f"{doc['kind']} {doc['metadata']['name']} has no namespace"


def test_every_object_has_the_standard_labels(rendered: Rendered) -> None:
    for doc in rendered.docs:
        labels = doc["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/name") == "tokensync", doc["metadata"]
        assert labels.get("app.kubernetes.io/instance") == RELEASE
        assert labels.get("app.kubernetes.io/version") == "0.1.0"
        assert labels.get("app.kubernetes.io/managed-by") == "Helm"
        assert labels.get("helm.sh/chart") == "tokensync-0.1.0"


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
        "limits": {"cpu": "500m", "memory": "256Mi"},
    }
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"metrics": 8080, "health": 8081}
    assert container["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]  # noqa: S108 - a path in the pod
    assert rendered.pod_spec["volumes"] == [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}]
    assert container["image"] == "ghcr.io/tokensync/tokensync:0.1.0"


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


def test_the_operator_arguments_parse_with_the_real_cli(rendered: Rendered) -> None:
    """Every flag the chart passes exists in `tokensync run`, with a valid value."""
    assert rendered.container["command"] == ["tokensync"]
    assert rendered.args[0] == "run"
    with run_command.make_context("run", list(rendered.args[1:])) as ctx:
        params = ctx.params
    assert params["allowed_hosts"] == ("api.palisade.co", "api.sandbox.palisade.co")
    assert params["log_level"] == "info"
    assert params["log_format"] == "json"
    assert params["liveness_port"] == 8081
    assert params["metrics_port"] == 8080
    # The help text is where a user looks: the chart must not rely on a hidden flag.
    help_text = CliRunner().invoke(run_command, ["--help"]).output
    for flag in {a.split("=", 1)[0] for a in rendered.args[1:]}:
        assert flag in help_text, flag


# --- what each value set must produce ---------------------------------------------------------------


def test_defaults_one_replica_cluster_wide_no_peering() -> None:
    rendered = render_set("default")
    deployment = rendered.deployment
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert not rendered.of_kind("PodDisruptionBudget")
    assert "--all-namespaces" in rendered.args
    assert not any(a.startswith(("--namespace", "--peering")) for a in rendered.args)
    assert not any(
        d["kind"] in {"ClusterKopfPeering", "KopfPeering", "CustomResourceDefinition"} for d in rendered.docs
    )
    assert not rendered.of_kind("ServiceMonitor")
    assert not rendered.of_kind("NetworkPolicy")
    assert "affinity" not in rendered.pod_spec
    role = rendered.one("ClusterRole")
    assert rules_of(role) == NAMESPACED_RULES | CRD_DISCOVERY_RULES
    binding = rendered.one("ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "tokensync", "namespace": NAMESPACE}]
    assert not rendered.of_kind("Role")
    assert not rendered.of_kind("RoleBinding")
    assert [a for a in rendered.args if a.startswith("--allowed-token-host")] == [
        "--allowed-token-host=api.palisade.co",
        "--allowed-token-host=api.sandbox.palisade.co",
    ]


def test_watch_namespaces_gets_a_role_per_namespace_and_namespace_flags() -> None:
    rendered = render_set("namespaced")
    roles = {r["metadata"]["namespace"]: r for r in rendered.of_kind("Role")}
    bindings = {b["metadata"]["namespace"]: b for b in rendered.of_kind("RoleBinding")}
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
    # Only CRD discovery stays cluster-wide.
    cluster_role = rendered.one("ClusterRole")
    assert rules_of(cluster_role) == CRD_DISCOVERY_RULES
    assert rendered.one("ClusterRoleBinding")["roleRef"]["name"] == cluster_role["metadata"]["name"]
    assert [a for a in rendered.args if a.startswith("--namespace")] == ["--namespace=team-a", "--namespace=team-b"]
    assert "--all-namespaces" not in rendered.args


def test_ha_has_peering_a_pdb_and_rolling_updates() -> None:
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
    assert f"--peering={RELEASE}" in rendered.args
    assert "--all-namespaces" in rendered.args
    assert "--priority" not in " ".join(rendered.args), "replicas pick their own random priority"
    # The peering CRD (kopf's schema), the peering object named after the release, and RBAC for it.
    crd = rendered.one("CustomResourceDefinition", "clusterkopfpeerings.kopf.dev")
    assert crd["spec"]["scope"] == "Cluster"
    assert crd["spec"]["names"]["kind"] == "ClusterKopfPeering"
    (version,) = crd["spec"]["versions"]
    assert version["name"] == "v1"
    assert version["served"]
    assert version["storage"]
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]
    assert status == {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    peering = rendered.one("ClusterKopfPeering", RELEASE)
    assert peering["apiVersion"] == "kopf.dev/v1"
    assert "post-install" in peering["metadata"]["annotations"]["helm.sh/hook"]
    assert rules_of(rendered.one("ClusterRole")) == (
        NAMESPACED_RULES | CRD_DISCOVERY_RULES | peering_rules("clusterkopfpeerings")
    )
    # Several replicas spread over nodes, and kopf knows each pod by name.
    anti = rendered.pod_spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert anti[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    env = {e["name"]: e for e in rendered.container["env"]}
    assert env["POD_ID"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}


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


def test_namespaced_ha_uses_a_kopf_peering_per_watched_namespace() -> None:
    rendered = helm_template("--values", VALUES_DIR / "namespaced.yaml", "--set", "replicaCount=2")
    crd = rendered.one("CustomResourceDefinition", "kopfpeerings.kopf.dev")
    assert crd["spec"]["scope"] == "Namespaced"
    assert not any(d["kind"] == "ClusterKopfPeering" for d in rendered.docs)
    peerings = rendered.of_kind("KopfPeering")
    assert {(p["metadata"]["namespace"], p["metadata"]["name"]) for p in peerings} == {
        ("team-a", RELEASE),
        ("team-b", RELEASE),
    }
    for role in rendered.of_kind("Role"):
        assert rules_of(role) == NAMESPACED_RULES | peering_rules("kopfpeerings")
    assert rules_of(rendered.one("ClusterRole")) == CRD_DISCOVERY_RULES
    assert f"--peering={RELEASE}" in rendered.args


def test_ha_enabled_with_one_replica_peers_but_keeps_recreate() -> None:
    rendered = helm_template("--set", "ha.enabled=true")
    assert f"--peering={RELEASE}" in rendered.args
    assert rendered.deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert not rendered.of_kind("PodDisruptionBudget")
    rendered = helm_template("--set", "ha.enabled=true", "--set", "ha.installPeeringCRD=false")
    assert not rendered.of_kind("CustomResourceDefinition")
    assert rendered.one("ClusterKopfPeering", RELEASE)


def test_rollout_restart_rbac_only_when_enabled() -> None:
    assert not rules_of(render_set("default").one("ClusterRole")) & ROLLOUT_RULES
    rendered = helm_template("--set", "rolloutRestart.enabled=true")
    assert rules_of(rendered.one("ClusterRole")) >= ROLLOUT_RULES
    rendered = helm_template("--values", VALUES_DIR / "namespaced.yaml", "--set", "rolloutRestart.enabled=true")
    for role in rendered.of_kind("Role"):
        assert rules_of(role) >= ROLLOUT_RULES
    assert not rules_of(rendered.one("ClusterRole")) & ROLLOUT_RULES


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
    assert {"name": "TZ", "value": "UTC"} in rendered.container["env"]
    assert pod["priorityClassName"] == "system-cluster-critical"
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert pod["tolerations"] == values["tolerations"]
    assert pod["affinity"] == {"nodeAffinity": {}}
    assert "--allowed-token-host=tokens.example.com" in rendered.args
    assert "--log-level=debug" in rendered.args
    assert "--log-format=text" in rendered.args
    assert rendered.args[-1] == "--max-exchanges-per-host=4"


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
    assert chart["version"] == "0.1.0"
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
