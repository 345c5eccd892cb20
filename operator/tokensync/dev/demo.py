"""``tokensync demo``: the whole operator end to end, with no cluster.

Starts an in-memory Kubernetes API (``dev.cluster``), the Palisade-compatible dev
token server (``dev.tokenserver``, HTTPS with a throwaway CA) and the operator itself;
applies ``examples/`` pointed at the dev server; then narrates what happens:
the Secret appearing, its refresh before expiry, and a deliberate failure (a
wrong client secret) that shows ``InvalidCredentials`` in status while the old
token stays in the Secret. Tokens are shown only as short hashes.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kubernetes
import yaml

from ..kubeapi import load_configuration
from ..manager import run_operator
from ..settings import Settings
from .cluster import FakeCluster
from .tokenserver import DevTokenServer

NAMESPACE = "demo"
CA_CONFIGMAP = "demo-token-server-ca"
EXAMPLES = ("credentials-secret.yaml", "clientcredential.yaml")
DEMO_CLIENT_ID, DEMO_CLIENT_SECRET = "demo-client", "demo-secret"
WRONG_SECRET = "not-the-secret"


def find_examples() -> Path:
    """``examples/`` of the source tree (the demo runs from a checkout: ``make demo``)."""
    for base in (Path.cwd(), *Path(__file__).resolve().parents):
        candidate = base / "examples"
        if all((candidate / name).is_file() for name in EXAMPLES):
            return candidate
    raise FileNotFoundError("examples/ not found: run the demo from the tokensync checkout (make demo)")


def short_hash(token: str) -> str:
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()[:10]


class Narrator:
    def __init__(self) -> None:
        self.started = time.monotonic()

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f}s] {text}", flush=True)


class Demo:
    def __init__(self, cluster: FakeCluster, server: DevTokenServer, narrator: Narrator, kubeconfig: Path) -> None:
        self.cluster = cluster
        self.server = server
        self.say = narrator.say
        self.client = kubernetes.client.ApiClient(load_configuration(str(kubeconfig)))
        self.tokens: dict[str, int] = {}
        self.last_status: tuple[str, str, str] | None = None
        self.secret_name = "palisade-token"

    # applying --------------------------------------------------------------------------------

    def apply_examples(self, examples: Path) -> None:
        core = kubernetes.client.CoreV1Api(self.client)
        custom = kubernetes.client.CustomObjectsApi(self.client)
        core.create_namespaced_config_map(
            NAMESPACE,
            kubernetes.client.V1ConfigMap(
                metadata=kubernetes.client.V1ObjectMeta(name=CA_CONFIGMAP), data={"ca.crt": self.server.ca_pem.decode()}
            ),
        )
        secret = yaml.safe_load((examples / "credentials-secret.yaml").read_text())
        core.create_namespaced_secret(NAMESPACE, secret)
        self.say(f"applied examples/credentials-secret.yaml (Secret {secret['metadata']['name']})")
        resource = yaml.safe_load((examples / "clientcredential.yaml").read_text())
        # The one change for the demo: the dev token server instead of api.palisade.co, and its CA.
        resource["spec"]["tokenURL"] = self.server.token_url
        resource["spec"]["caBundleRef"] = {"kind": "ConfigMap", "name": CA_CONFIGMAP, "key": "ca.crt"}
        self.secret_name = resource["spec"].get("target", {}).get("name") or resource["metadata"]["name"]
        custom.create_namespaced_custom_object("tokensync.io", "v1alpha1", NAMESPACE, "clientcredentials", resource)
        self.say(
            f"applied examples/clientcredential.yaml (ClientCredential {resource['metadata']['name']}, "
            f"tokenURL -> {self.server.token_url})"
        )

    def break_credentials(self) -> None:
        core = kubernetes.client.CoreV1Api(self.client)
        wrong = base64.b64encode(WRONG_SECRET.encode()).decode()
        core.patch_namespaced_secret(
            "palisade-credentials",
            NAMESPACE,
            {"data": {"clientSecret": wrong}},
            _content_type="application/merge-patch+json",
        )

    # observing -------------------------------------------------------------------------------

    def secret_token(self) -> tuple[str, str] | None:
        secret = self.cluster.get("v1", "secrets", NAMESPACE, self.secret_name)
        if not secret or "accessToken" not in (secret.get("data") or {}):
            return None
        data = secret["data"]
        return base64.b64decode(data["accessToken"]).decode(), base64.b64decode(data["expiresAt"]).decode()

    def resource(self) -> dict[str, Any]:
        return self.cluster.get("tokensync.io/v1alpha1", "clientcredentials", NAMESPACE, "palisade") or {}

    def observe(self) -> None:
        """Print what changed since the last look: the Secret's token and the Ready condition."""
        current = self.secret_token()
        if current is not None and current[0] not in self.tokens:
            number = self.tokens[current[0]] = len(self.tokens) + 1
            verb = "created with" if number == 1 else "refreshed to"
            hashed = short_hash(current[0])
            self.say(f"Secret {self.secret_name} {verb} token #{number} ({hashed}), expires {current[1]}")
        status = self.resource().get("status") or {}
        ready = next((c for c in status.get("conditions", []) if c["type"] == "Ready"), None)
        if ready is not None:
            key = (ready["status"], ready["reason"], ready.get("message", ""))
            if key != self.last_status:
                self.last_status = key
                self.say(f"status: Ready={key[0]} reason={key[1]}: {key[2]}")

    def token_number(self) -> int:
        current = self.secret_token()
        return self.tokens.get(current[0], 0) if current else 0

    def ready_reason(self) -> str:
        return self.last_status[1] if self.last_status else ""

    async def wait_for(self, condition: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.observe()
            if condition():
                return True
            await asyncio.sleep(0.1)
        return False

    def print_events(self) -> None:
        events = self.cluster.list("v1", "events", NAMESPACE)
        self.say(f"events on ClientCredential palisade ({len(events)}):")
        for event in events:
            print(f"          {event.get('type', ''):8} {event.get('reason', ''):20} {event.get('message', '')}")


async def _narrate(demo: Demo, lifetime: int, keep_running: bool) -> int:
    demo.apply_examples(find_examples())
    if not await demo.wait_for(lambda: demo.token_number() >= 1 and demo.ready_reason() == "TokenIssued", 30):
        demo.say("FAILED: no token was issued within 30 s")
        return 1
    demo.say(f"waiting for the refresh (renewal at 67% of the {lifetime}s lifetime, before expiry)...")
    if not await demo.wait_for(lambda: demo.token_number() >= 2, lifetime * 2):
        demo.say("FAILED: the token was not refreshed")
        return 1
    demo.say(f"refreshed before expiry: {demo.server.issued} tokens issued by the token server so far")

    demo.say("now a deliberate failure: the credentials Secret gets a wrong client secret")
    before = demo.secret_token()
    demo.break_credentials()
    if not await demo.wait_for(lambda: demo.ready_reason() == "InvalidCredentials", 30):
        demo.say("FAILED: the wrong secret was not reported as InvalidCredentials")
        return 1
    after = demo.secret_token()
    status = demo.resource().get("status") or {}
    failure = status.get("lastFailure") or {}
    demo.say(
        f"status.lastFailure: httpStatus={failure.get('httpStatus')} code={failure.get('code')} "
        f"message={failure.get('message')!r}"
    )
    if before is None or after != before:
        demo.say("FAILED: the Secret's token changed after a failed exchange")
        return 1
    remaining = (datetime.fromisoformat(after[1].replace("Z", "+00:00")) - datetime.now(UTC)).total_seconds()
    demo.say(
        f"the old token #{demo.token_number()} is still in Secret {demo.secret_name} "
        f"({max(remaining, 0):.0f}s left): workloads keep working until it expires"
    )
    demo.print_events()
    if keep_running:
        demo.say("running until Ctrl-C (fix the Secret and watch it recover)...")
        while True:
            demo.observe()
            await asyncio.sleep(0.5)
    demo.say("demo finished: OK")
    return 0


def run_demo(*, keep_running: bool = False, lifetime: int = 8) -> int:
    """Run the demo; returns the process exit code."""
    logging.basicConfig(level=logging.WARNING, format="          operator %(levelname)s %(message)s")
    narrator = Narrator()
    with tempfile.TemporaryDirectory(prefix="tokensync-demo-") as tmp, FakeCluster() as cluster:
        kubeconfig = cluster.write_kubeconfig(Path(tmp) / "kubeconfig", namespace=NAMESPACE)
        with DevTokenServer(
            credentials={DEMO_CLIENT_ID: DEMO_CLIENT_SECRET}, lifetime=lifetime, cert_dir=Path(tmp) / "ca"
        ) as server:
            narrator.say(f"Kubernetes API stand-in at {cluster.url}")
            narrator.say(f"dev token server at {server.token_url} (token lifetime {lifetime}s)")
            settings = Settings(allowed_token_hosts=("127.0.0.1",), kubeconfig=str(kubeconfig))
            ready, stop = threading.Event(), threading.Event()
            thread = threading.Thread(
                target=lambda: asyncio.run(run_operator(settings, ready_flag=ready, stop_flag=stop)),
                name="operator",
                daemon=True,
            )
            thread.start()
            if not ready.wait(30):
                narrator.say("FAILED: the operator did not start")
                return 1
            narrator.say("operator started (allowed token host: 127.0.0.1)")
            demo = Demo(cluster, server, narrator, kubeconfig)
            try:
                return asyncio.run(_narrate(demo, lifetime, keep_running))
            except KeyboardInterrupt:
                return 0
            finally:
                stop.set()
                thread.join(30)
                demo.client.close()  # type: ignore[no-untyped-call]
