"""The chart's admission policy (the allowlist at admission) on a real Kubernetes API server.

What only a real API server shows: that the ValidatingAdmissionPolicy the chart renders is accepted,
type-checks against the ClientCredential schema, and rejects a ClientCredential whose token host is not
in allowedTokenHosts while admitting the allowed ones. tests/chart/test_admission_policy.py evaluates
the same expressions without a cluster.

The policy is rendered with helm (`make tools`) for this test alone: its own name, allowedTokenHosts
``api.palisade.co`` and ``127.0.0.1``, and watchNamespaces set to a fresh namespace, so nothing else in
the cluster is affected; both objects are deleted afterwards. No operator runs.

Skipped, with the reason, when no cluster is reachable (or it has no admissionregistration.k8s.io/v1
policies: Kubernetes < 1.30). Run with e.g. ``KUBECONFIG=~/.kube/kind pytest tests/e2e``.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml

from ..chart.support import helm_template
from .test_real_cluster import _cluster_or_skip

ROOT = Path(__file__).resolve().parents[2]
GROUP, VERSION, PLURAL = "tokensync.io", "v1alpha1", "clientcredentials"
HOSTS = ["api.palisade.co", "127.0.0.1"]
ALLOWED = "allowed token hosts (allowedTokenHosts of the tokensync chart): api.palisade.co, 127.0.0.1"

pytestmark = pytest.mark.e2e

ApiException = kubernetes.client.exceptions.ApiException


@pytest.fixture(scope="module")
def client() -> Iterator[kubernetes.client.ApiClient]:
    api_client = _cluster_or_skip()
    resources = kubernetes.client.AdmissionregistrationV1Api(api_client).get_api_resources()
    if "validatingadmissionpolicies" not in {r.name for r in resources.resources}:
        pytest.skip("e2e: this cluster has no admissionregistration.k8s.io/v1 ValidatingAdmissionPolicy (< 1.30)")
    crd = yaml.safe_load((ROOT / "crds" / "tokensync.io_clientcredentials.yaml").read_text())
    extensions = kubernetes.client.ApiextensionsV1Api(api_client)
    try:
        extensions.create_custom_resource_definition(crd)
    except ApiException as exc:
        if exc.status != 409:
            raise
        existing = extensions.read_custom_resource_definition(crd["metadata"]["name"])
        crd["metadata"]["resourceVersion"] = existing.metadata.resource_version
        extensions.replace_custom_resource_definition(crd["metadata"]["name"], crd)
    time.sleep(2)  # let the new schema be served
    yield api_client
    api_client.close()


def make_namespace(client: kubernetes.client.ApiClient, prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    kubernetes.client.CoreV1Api(client).create_namespace({"metadata": {"name": name}})
    return name


@pytest.fixture(scope="module")
def namespace(client: kubernetes.client.ApiClient) -> Iterator[str]:
    name = make_namespace(client, "tokensync-vap")
    yield name
    kubernetes.client.CoreV1Api(client).delete_namespace(name)


@pytest.fixture(scope="module")
def other_namespace(client: kubernetes.client.ApiClient) -> Iterator[str]:
    name = make_namespace(client, "tokensync-vap-other")
    yield name
    kubernetes.client.CoreV1Api(client).delete_namespace(name)


def custom(client: kubernetes.client.ApiClient) -> kubernetes.client.CustomObjectsApi:
    return kubernetes.client.CustomObjectsApi(client)


def body(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    full = {"credentialsRef": {"name": "palisade-credentials"}, **spec}
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ClientCredential", "metadata": {"name": name}, "spec": full}


def create(client: kubernetes.client.ApiClient, namespace: str, name: str, spec: dict[str, Any]) -> None:
    custom(client).create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body(name, spec))


def delete(client: kubernetes.client.ApiClient, namespace: str, name: str) -> None:
    custom(client).delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)


def denied_by_policy(exc: ApiException, policy: str) -> dict[str, Any]:
    status: dict[str, Any] = json.loads(exc.body)
    assert exc.status == 403, status
    assert status["reason"] == "Forbidden", status
    assert f"ValidatingAdmissionPolicy '{policy}' with binding '{policy}' denied request" in status["message"]
    return status


@pytest.fixture(scope="module")
def policy(client: kubernetes.client.ApiClient, namespace: str) -> Iterator[str]:
    """The chart's policy and binding, applied and enforced; yields the policy's name."""
    fullname = f"tokensync-e2e-{uuid.uuid4().hex[:6]}"
    rendered = helm_template(
        "--set",
        f"fullnameOverride={fullname}",
        "--set-json",
        f"allowedTokenHosts={json.dumps(HOSTS)}",
        "--set-json",
        f"watchNamespaces={json.dumps([namespace])}",
    )
    policy_doc = rendered.one("ValidatingAdmissionPolicy")
    binding_doc = rendered.one("ValidatingAdmissionPolicyBinding")
    name = policy_doc["metadata"]["name"]
    admission = kubernetes.client.AdmissionregistrationV1Api(client)
    admission.create_validating_admission_policy(policy_doc)
    admission.create_validating_admission_policy_binding(binding_doc)
    try:
        # The API server picks new policies up within seconds: probe until a disallowed host is refused.
        deadline = time.monotonic() + 60
        while True:
            try:
                create(client, namespace, "probe", {"tokenURL": "https://evil.example/token"})
            except ApiException as exc:
                if exc.status == 403:
                    break
                raise
            delete(client, namespace, "probe")
            assert time.monotonic() < deadline, "the admission policy was not enforced within 60 s"
            time.sleep(1)
        yield name
    finally:
        admission.delete_validating_admission_policy_binding(binding_doc["metadata"]["name"])
        admission.delete_validating_admission_policy(name)


def test_the_policy_type_checks_against_the_clientcredential_schema(
    client: kubernetes.client.ApiClient, policy: str
) -> None:
    admission = kubernetes.client.AdmissionregistrationV1Api(client)
    deadline = time.monotonic() + 60
    while True:
        current = admission.read_validating_admission_policy(policy)
        status = current.status
        if status is not None and status.observed_generation == current.metadata.generation:
            break
        assert time.monotonic() < deadline, "the policy was not type-checked within 60 s"
        time.sleep(1)
    warnings = (status.type_checking.expression_warnings or []) if status.type_checking else []
    assert not warnings, [(w.field_ref, w.warning) for w in warnings]


@pytest.mark.parametrize(
    ("url", "host"),
    [
        pytest.param("https://evil.example/token", "evil.example", id="a disallowed host"),
        pytest.param("https://api.palisade.co.evil.com/token", "api.palisade.co.evil.com", id="suffix trick"),
        pytest.param("https://evilapi.palisade.co/token", "evilapi.palisade.co", id="a longer name"),
        pytest.param("https://EVIL.example:8443/token", "evil.example", id="upper case and a port"),
        pytest.param("https://203.0.113.7/token", "203.0.113.7", id="an IP address not listed"),
        pytest.param("https://[::1]:8443/token", "[::1]:8443", id="an IPv6 literal"),
        # Go before 1.24.8/1.25.2 parses a name in brackets (the host keeps them); later Go refuses the URL.
        pytest.param("https://[api.palisade.co]/token", "[api.palisade.co]", id="an allowed name in brackets"),
    ],
)
def test_a_disallowed_token_host_is_rejected(
    client: kubernetes.client.ApiClient, namespace: str, policy: str, url: str, host: str
) -> None:
    for provider in ("palisade", "oauth2"):
        with pytest.raises(ApiException) as raised:
            create(client, namespace, "denied", {"provider": provider, "tokenURL": url})
        message = denied_by_policy(raised.value, policy)["message"]
        reasons = [f"spec.tokenURL has the host {host}, which is not allowed; {ALLOWED}"]
        if host.startswith("["):
            reasons.append(f"spec.tokenURL is not a valid URL with a host name; {ALLOWED}")
        assert any(reason in message for reason in reasons), message


def test_userinfo_tricks_never_get_in(client: kubernetes.client.ApiClient, namespace: str, policy: str) -> None:
    """The CRD pattern refuses '@' first (422); the policy would refuse the host too."""
    with pytest.raises(ApiException) as raised:
        create(client, namespace, "userinfo", {"tokenURL": "https://api.palisade.co@evil.example/"})
    assert raised.value.status in {403, 422}


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param({"tokenURL": "https://api.palisade.co/v2/credentials/oauth/token"}, id="the Palisade URL"),
        pytest.param({"tokenURL": "https://API.Palisade.co.:8443/v2/token"}, id="case, a trailing dot and a port"),
        pytest.param({}, id="palisade without tokenURL: its default host is allowed"),
        pytest.param({"provider": "oauth2", "tokenURL": "https://127.0.0.1:9443/token"}, id="a listed IP address"),
    ],
)
def test_an_allowed_token_host_is_admitted(
    client: kubernetes.client.ApiClient, namespace: str, policy: str, spec: dict[str, Any]
) -> None:
    create(client, namespace, "allowed", spec)
    delete(client, namespace, "allowed")


def test_updates_are_checked_when_they_change_spec(
    client: kubernetes.client.ApiClient, namespace: str, policy: str
) -> None:
    create(client, namespace, "updated", {"tokenURL": "https://api.palisade.co/v2/credentials/oauth/token"})
    try:
        with pytest.raises(ApiException) as raised:
            custom(client).patch_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, "updated", {"spec": {"tokenURL": "https://evil.example/token"}}
            )
        denied_by_policy(raised.value, policy)
        # Metadata alone is not a new destination.
        custom(client).patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, "updated", {"metadata": {"labels": {"team": "payments"}}}
        )
    finally:
        delete(client, namespace, "updated")


def test_other_namespaces_are_not_this_releases(
    client: kubernetes.client.ApiClient, other_namespace: str, policy: str
) -> None:
    """watchNamespaces scopes the policy: elsewhere (another release's namespaces) it does not apply."""
    create(client, other_namespace, "elsewhere", {"tokenURL": "https://evil.example/token"})
    delete(client, other_namespace, "elsewhere")
