"""End to end against a real Kubernetes API server: whatever ``$KUBECONFIG`` points at.

What only a real API server does, and the stand-in cannot prove: CEL admission
rules, structural-schema defaulting and pruning, the status subresource,
ownerReference garbage collection. The operator runs in this process (as in
the integration tests) against a fresh namespace, with the dev token server on
this machine; the CRD from ``crds/`` is applied first.

Skipped, with the reason, when no cluster is reachable. Run with e.g.
``KUBECONFIG=~/.kube/kind pytest tests/e2e``.
"""

from __future__ import annotations

import asyncio
import base64
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml

from tokensync.dev.tokenserver import DevTokenServer
from tokensync.manager import run_operator
from tokensync.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
GROUP, VERSION, PLURAL = "tokensync.io", "v1alpha1", "clientcredentials"
CLIENT_ID, CLIENT_SECRET = "e2e-client", "e2e-secret-9c1d"

pytestmark = pytest.mark.e2e


def _cluster_or_skip() -> kubernetes.client.ApiClient:
    kubeconfig = os.environ.get("KUBECONFIG")
    if not kubeconfig or not Path(kubeconfig).expanduser().exists():
        pytest.skip("e2e: no cluster (set KUBECONFIG to a test cluster's kubeconfig to run these tests)")
    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    client = kubernetes.client.ApiClient(configuration)
    try:
        kubernetes.client.VersionApi(client).get_code(_request_timeout=5)
    except Exception as exc:  # any failure to reach it means: no cluster here
        pytest.skip(f"e2e: the cluster in KUBECONFIG is not reachable ({type(exc).__name__})")
    return client


@pytest.fixture(scope="module")
def client() -> Iterator[kubernetes.client.ApiClient]:
    api_client = _cluster_or_skip()
    crd = yaml.safe_load((ROOT / "crds" / "tokensync.io_clientcredentials.yaml").read_text())
    extensions = kubernetes.client.ApiextensionsV1Api(api_client)
    try:
        extensions.create_custom_resource_definition(crd)
    except kubernetes.client.exceptions.ApiException as exc:
        if exc.status != 409:
            raise
        existing = extensions.read_custom_resource_definition(crd["metadata"]["name"])
        crd["metadata"]["resourceVersion"] = existing.metadata.resource_version
        extensions.replace_custom_resource_definition(crd["metadata"]["name"], crd)
    time.sleep(2)  # let the new schema be served
    yield api_client
    api_client.close()


@pytest.fixture
def namespace(client: kubernetes.client.ApiClient) -> Iterator[str]:
    name = f"tokensync-e2e-{uuid.uuid4().hex[:6]}"
    core = kubernetes.client.CoreV1Api(client)
    core.create_namespace({"metadata": {"name": name}})
    yield name
    core.delete_namespace(name)


@pytest.fixture
def token_server(tmp_path: Path) -> Iterator[DevTokenServer]:
    with DevTokenServer(credentials={CLIENT_ID: CLIENT_SECRET}, lifetime=30, cert_dir=tmp_path) as server:
        yield server


@pytest.fixture
def operator(namespace: str) -> Iterator[None]:
    settings = Settings(
        allowed_token_hosts=("127.0.0.1",), namespaces=(namespace,), kubeconfig=os.environ["KUBECONFIG"]
    )
    ready, stop = threading.Event(), threading.Event()
    thread = threading.Thread(
        target=lambda: asyncio.run(run_operator(settings, ready_flag=ready, stop_flag=stop)), daemon=True
    )
    thread.start()
    assert ready.wait(30), "the operator did not start"
    yield
    stop.set()
    thread.join(30)


def wait_for(check: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.5)
    raise AssertionError(f"not true within {timeout}s: {check}")


def custom(client: kubernetes.client.ApiClient) -> kubernetes.client.CustomObjectsApi:
    return kubernetes.client.CustomObjectsApi(client)


def body(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ClientCredential", "metadata": {"name": name}, "spec": spec}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        pytest.param(
            {"tokenURL": "http://127.0.0.1/token", "credentialsRef": {"name": "c"}}, "https", id="http is rejected"
        ),
        pytest.param(
            {"credentialsRef": {"name": "c"}, "renewal": {"percent": 50, "before": "10m"}},
            "exclusive",
            id="percent and before together are rejected",
        ),
        pytest.param(
            {"credentialsRef": {"name": "c"}, "renewal": {"percent": 100}}, "percent", id="percent 100 is rejected"
        ),
        pytest.param({"provider": "oauth2", "credentialsRef": {"name": "c"}}, "tokenURL", id="oauth2 needs tokenURL"),
    ],
)
def test_admission_rejects_invalid_specs(
    client: kubernetes.client.ApiClient, namespace: str, spec: dict[str, Any], message: str
) -> None:
    with pytest.raises(kubernetes.client.exceptions.ApiException) as raised:
        custom(client).create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body("bad", spec))
    assert raised.value.status == 422
    assert message in str(raised.value.body)


def seed_inputs(core: kubernetes.client.CoreV1Api, namespace: str, token_server: DevTokenServer) -> dict[str, Any]:
    """The credentials Secret and the CA ConfigMap; returns a spec that uses them."""
    core.create_namespaced_secret(
        namespace, {"metadata": {"name": "creds"}, "stringData": {"clientId": CLIENT_ID, "clientSecret": CLIENT_SECRET}}
    )
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "ca"}, "data": {"ca.crt": token_server.ca_pem.decode()}}
    )
    return {
        "tokenURL": token_server.token_url,
        "credentialsRef": {"name": "creds"},
        "caBundleRef": {"name": "ca", "key": "ca.crt"},
    }


def test_token_secret_status_and_garbage_collection(
    client: kubernetes.client.ApiClient, namespace: str, token_server: DevTokenServer, operator: None
) -> None:
    core = kubernetes.client.CoreV1Api(client)
    spec = seed_inputs(core, namespace, token_server)
    custom(client).create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body("e2e", spec))

    def ready() -> bool:
        obj = custom(client).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "e2e")
        conditions = (obj.get("status") or {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    wait_for(ready)
    secret = core.read_namespaced_secret("e2e", namespace)
    assert base64.b64decode(secret.data["accessToken"]).decode() == token_server.tokens[-1]
    assert secret.metadata.owner_references[0].kind == "ClientCredential"

    custom(client).delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "e2e")

    def secret_gone() -> bool:
        try:
            core.read_namespaced_secret("e2e", namespace)
        except kubernetes.client.exceptions.ApiException as exc:
            return exc.status == 404
        return False

    wait_for(secret_gone, timeout=60)  # the real garbage collector, not the stand-in's


def test_no_finalizer_and_a_requested_refresh_lands(
    client: kubernetes.client.ApiClient, namespace: str, token_server: DevTokenServer, operator: None
) -> None:
    """The kopf-free shell on a real API server: no finalizer; a requested refresh lands."""
    spec = seed_inputs(kubernetes.client.CoreV1Api(client), namespace, token_server)
    custom(client).create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body("shell", spec))

    def status() -> dict[str, Any]:
        obj = custom(client).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "shell")
        return dict(obj.get("status") or {})

    wait_for(lambda: any(c["type"] == "Ready" and c["status"] == "True" for c in status().get("conditions", [])))
    obj = custom(client).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "shell")
    assert not obj["metadata"].get("finalizers")
    custom(client).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "shell",
        {"metadata": {"annotations": {"tokensync.io/refresh-requested-at": "e2e-1"}}},
    )  # fmt: skip
    wait_for(lambda: status().get("lastRefreshRequest") == "e2e-1")
    assert token_server.issued == 2


def test_leader_election_by_lease_on_a_real_api_server(namespace: str, token_server: DevTokenServer) -> None:
    """Two operators, one Lease: exactly one holds it; when it stops, the other takes over."""
    from kubernetes.client import CoordinationV1Api

    stops: list[threading.Event] = []
    threads: list[threading.Thread] = []
    for identity in ("e2e-a", "e2e-b"):
        settings = Settings(
            allowed_token_hosts=("127.0.0.1",),
            namespaces=(namespace,),
            kubeconfig=os.environ["KUBECONFIG"],
            leader_election=True,
            election_namespace=namespace,
            election_id="tokensync-e2e",
            identity=identity,
            lease_duration=6,
            renew_deadline=4,
            retry_period=1,
        )
        ready, stop = threading.Event(), threading.Event()
        thread = threading.Thread(
            target=lambda s=settings, r=ready, t=stop: asyncio.run(run_operator(s, ready_flag=r, stop_flag=t)),
            daemon=True,
        )
        thread.start()
        assert ready.wait(60)
        stops.append(stop)
        threads.append(thread)
    leases = CoordinationV1Api(kubernetes.config.new_client_from_config(os.environ["KUBECONFIG"]))

    def holder() -> str:
        try:
            lease = leases.read_namespaced_lease("tokensync-e2e", namespace)
        except kubernetes.client.exceptions.ApiException as exc:
            if exc.status == 404:
                return ""  # not created yet
            raise
        return str(lease.spec.holder_identity or "")

    try:
        first = wait_for(holder, timeout=60)
        stops[("e2e-a", "e2e-b").index(first)].set()  # a clean stop releases the Lease
        wait_for(lambda: holder() not in ("", first), timeout=30)
    finally:
        for stop in stops:
            stop.set()
        for thread in threads:
            thread.join(60)
