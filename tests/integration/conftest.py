"""The integration harness: the real operator, a Kubernetes API stand-in over HTTP, a real HTTPS token server.

Each test gets its own FakeCluster (kmock made faithful, in its own thread) and
DevTokenServer (HTTPS with a throwaway CA, in its own thread); the operator runs
in its own thread and event loop through ``run_operator()``, exactly as ``tokensync run``
runs it. Every log record the operator emits is captured: a test fails if one is
an ERROR it did not expect, or if a client secret or token shows up anywhere.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from tokensync.dev.cluster import FakeCluster
from tokensync.dev.tokenserver import DevTokenServer
from tokensync.manager import run_operator
from tokensync.settings import Settings

NAMESPACE = "payments"
CLIENT_ID = "client-a"
CLIENT_SECRET = "s3cr3t-A-7f0c1e9b2d4a6c8e"
SECRETS_CORE = "v1"
CC_GV = "tokensync.io/v1alpha1"


class LogCapture(logging.Handler):
    """Every record, formatted with its traceback: what an operator's log reader would see."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []
        self.records: list[logging.LogRecord] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.lines.append(self.format(record))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def errors(self) -> list[str]:
        return [self.format(r) for r in self.records if r.levelno >= logging.ERROR]


@pytest.fixture
def logs() -> Iterator[LogCapture]:
    capture = LogCapture()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(capture)
    root.setLevel(logging.DEBUG)
    try:
        yield capture
    finally:
        root.removeHandler(capture)
        root.setLevel(old_level)


@pytest.fixture
def cluster() -> Iterator[FakeCluster]:
    with FakeCluster() as fake:
        yield fake


@pytest.fixture
def kubeconfig(cluster: FakeCluster, tmp_path: Path) -> Path:
    return cluster.write_kubeconfig(tmp_path / "kubeconfig", namespace=NAMESPACE)


@pytest.fixture
def token_server(tmp_path: Path) -> Iterator[DevTokenServer]:
    with DevTokenServer(credentials={CLIENT_ID: CLIENT_SECRET}, lifetime=3600, cert_dir=tmp_path / "ca") as server:
        yield server


class Api:
    """Test-side writes through the real kubernetes client; reads straight from the stand-in."""

    def __init__(self, cluster: FakeCluster, kubeconfig: Path) -> None:
        self.cluster = cluster
        configuration = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
        self.client = kubernetes.client.ApiClient(configuration)
        self.core = kubernetes.client.CoreV1Api(self.client)
        self.custom = kubernetes.client.CustomObjectsApi(self.client)

    # Secrets and ConfigMaps -------------------------------------------------------------------

    def put_secret(self, name: str, data: dict[str, str], **meta: Any) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": NAMESPACE, **meta},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
        }
        if self.secret(name) is None:
            self.core.create_namespaced_secret(NAMESPACE, body)
        else:
            self.core.patch_namespaced_secret(
                name, NAMESPACE, {"data": body["data"]}, _content_type="application/merge-patch+json"
            )

    def delete_secret(self, name: str) -> None:
        self.core.delete_namespaced_secret(name, NAMESPACE)

    def secret(self, name: str) -> dict[str, Any] | None:
        return self.cluster.get(SECRETS_CORE, "secrets", NAMESPACE, name)

    def secret_data(self, name: str) -> dict[str, str]:
        secret = self.secret(name) or {}
        return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}

    def put_configmap(self, name: str, data: dict[str, str]) -> None:
        body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": NAMESPACE}}
        self.core.create_namespaced_config_map(NAMESPACE, {**body, "data": data})

    # ClientCredentials ------------------------------------------------------------------------

    def create_cc(self, name: str, spec: dict[str, Any], **meta: Any) -> None:
        body = {
            "apiVersion": CC_GV,
            "kind": "ClientCredential",
            "metadata": {"name": name, "namespace": NAMESPACE, **meta},
            "spec": spec,
        }
        self.custom.create_namespaced_custom_object("tokensync.io", "v1alpha1", NAMESPACE, "clientcredentials", body)

    def patch_cc(self, name: str, patch: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(
            "tokensync.io",
            "v1alpha1",
            NAMESPACE,
            "clientcredentials",
            name,
            patch,
            _content_type="application/merge-patch+json",
        )

    def delete_cc(self, name: str) -> None:
        self.custom.delete_namespaced_custom_object("tokensync.io", "v1alpha1", NAMESPACE, "clientcredentials", name)

    def request_refresh(self, name: str, value: str) -> None:
        self.patch_cc(name, {"metadata": {"annotations": {"tokensync.io/refresh-requested-at": value}}})

    def cc(self, name: str) -> dict[str, Any] | None:
        return self.cluster.get(CC_GV, "clientcredentials", NAMESPACE, name)

    def status(self, name: str) -> dict[str, Any]:
        return (self.cc(name) or {}).get("status") or {}

    def condition(self, name: str, type_: str) -> dict[str, Any]:
        for condition in self.status(name).get("conditions", []):
            if condition["type"] == type_:
                return dict(condition)
        return {}

    def events(self) -> list[dict[str, Any]]:
        return self.cluster.list("v1", "events", NAMESPACE) + self.cluster.list("events.k8s.io/v1", "events", NAMESPACE)


@pytest.fixture
def api(cluster: FakeCluster, kubeconfig: Path) -> Iterator[Api]:
    client = Api(cluster, kubeconfig)
    try:
        yield client
    finally:
        client.client.close()


def cc_spec(token_server: DevTokenServer, **overrides: Any) -> dict[str, Any]:
    """A ClientCredential spec for the test token server (trusting its CA via caBundleRef)."""
    spec: dict[str, Any] = {
        "tokenURL": token_server.token_url,
        "credentialsRef": {"name": "palisade-credentials"},
        "caBundleRef": {"kind": "ConfigMap", "name": "test-ca", "key": "ca.crt"},
    }
    spec.update(overrides)
    return spec


@pytest.fixture
def seeded(api: Api, token_server: DevTokenServer) -> Api:
    """The credentials Secret and the CA ConfigMap every test starts with."""
    api.put_secret("palisade-credentials", {"clientId": CLIENT_ID, "clientSecret": CLIENT_SECRET})
    api.put_configmap("test-ca", {"ca.crt": token_server.ca_pem.decode()})
    return api


class OperatorRunner:
    """The real operator in its own thread and event loop, as ``tokensync run`` runs it.

    Its own thread and loop, so the test's loop stays free to poll while the operator works,
    as a separate process would be.
    """

    def __init__(self, kubeconfig: Path) -> None:
        self.settings = Settings(allowed_token_hosts=("127.0.0.1", "localhost"), kubeconfig=str(kubeconfig))
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._error: BaseException | None = None

    async def start(self, **overrides: Any) -> None:
        if overrides:
            self.settings = Settings(**{**self.settings.__dict__, **overrides})
        ready, self._stop, self._error = threading.Event(), threading.Event(), None

        def run() -> None:
            try:
                asyncio.run(run_operator(self.settings, ready_flag=ready, stop_flag=self._stop))
            except BaseException as exc:  # surfaced by start()/stop()
                self._error = exc
            finally:
                ready.set()

        self._thread = threading.Thread(target=run, name="operator", daemon=True)
        self._thread.start()
        # Generous: a loaded 2-core CI machine can take seconds to start a thread and sync caches.
        assert await asyncio.to_thread(ready.wait, 90), "the operator did not become ready in 90 s"
        if self._error is not None or not self._thread.is_alive():
            raise AssertionError("the operator exited during startup") from self._error

    async def stop(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        await asyncio.to_thread(self._thread.join, 90)
        assert not self._thread.is_alive(), "the operator did not stop in 90 s"
        self._thread = None
        if self._error is not None:
            raise AssertionError("the operator failed") from self._error


@pytest.fixture
async def operator(kubeconfig: Path, logs: LogCapture, request: pytest.FixtureRequest) -> AsyncIterator[OperatorRunner]:
    """The running operator; at the end, its output must hold no ERROR line unless the test expects one.

    ``@pytest.mark.operator_settings(...)`` overrides Settings fields for the test.
    """
    runner = OperatorRunner(kubeconfig)
    marker = request.node.get_closest_marker("operator_settings")
    await runner.start(**(marker.kwargs if marker else {}))
    try:
        yield runner
    finally:
        await runner.stop()
    if request.node.get_closest_marker("operator_errors_expected") is None:
        assert logs.errors() == [], "the operator logged errors"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def eventually(
    check: Callable[[], Any], *, timeout: float = 15.0, interval: float = 0.05, message: str = ""
) -> Any:
    """Poll ``check`` until it returns something truthy (and return that), or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"not true within {timeout}s: {message or check}; last value: {last!r}")


def assert_clean(logs: LogCapture, *secrets: str, allow_errors: bool = False) -> None:
    """No ERROR lines (unless expected) and no secret anywhere in the operator's output."""
    if not allow_errors:
        assert logs.errors() == [], "the operator logged errors"
    for secret in secrets:
        assert secret not in logs.text, "a secret or token reached the logs"
