"""Scale benchmark: many ClientCredentials, one process, no cluster.

Runs the real operator against the Kubernetes API stand-in and the dev token
server and prints numbers, with ratios against baselines measured in the same
process (not timed assertions: a noisy 2-core machine makes those flaky):

- time until N resources are Ready, against the time to create N plain Secrets
  through the same API (the floor any controller pays);
- exchanges sent, against one per resource (the CronJob-with-curl baseline),
  when the resources share G distinct credentials;
- Kubernetes API writes per resource;
- after an operator restart: the time until every resource is re-checked, and
  the exchanges made (the promise is zero while tokens are valid).

Usage: ``python bench/scale.py [--resources 300] [--groups 10]`` (``make bench``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import kubernetes

from tokensync.cli import run_operator
from tokensync.dev.cluster import FakeCluster
from tokensync.dev.tokenserver import DevTokenServer
from tokensync.kube import load_configuration
from tokensync.settings import Settings

NAMESPACE = "bench"


class Operator:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        ready = threading.Event()
        self.stop = threading.Event()
        self.thread = threading.Thread(
            target=lambda: asyncio.run(run_operator(self.settings, ready_flag=ready, stop_flag=self.stop)),
            daemon=True,
        )
        self.thread.start()
        if not ready.wait(60):
            raise RuntimeError("the operator did not start")

    def halt(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(60)


def wait_until(check: object, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():  # type: ignore[operator]
            return time.monotonic() - started
        time.sleep(0.05)
    raise TimeoutError(f"not done within {timeout}s")


def ready_count(cluster: FakeCluster) -> int:
    count = 0
    for obj in cluster.list("tokensync.io/v1alpha1", "clientcredentials", NAMESPACE):
        for condition in (obj.get("status") or {}).get("conditions", []):
            if condition["type"] == "Ready" and condition["status"] == "True":
                count += 1
    return count


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--resources", type=int, default=300)
    parser.add_argument("--groups", type=int, default=10, help="distinct credentials shared by the resources")
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args(argv)
    n, groups = args.resources, max(1, min(args.groups, args.resources))

    credentials = {f"client-{g}": f"secret-{g}" for g in range(groups)}
    with tempfile.TemporaryDirectory() as tmp, FakeCluster() as cluster:
        kubeconfig = cluster.write_kubeconfig(Path(tmp) / "kubeconfig", namespace=NAMESPACE)
        client = kubernetes.client.ApiClient(load_configuration(str(kubeconfig)))
        core = kubernetes.client.CoreV1Api(client)
        custom = kubernetes.client.CustomObjectsApi(client)
        with DevTokenServer(credentials=credentials, lifetime=3600, cert_dir=Path(tmp) / "ca") as server:
            # Baseline: N plain Secret creates through the same API and client.
            started = time.monotonic()
            for i in range(n):
                core.create_namespaced_secret(NAMESPACE, {"metadata": {"name": f"baseline-{i}"}, "data": {}})
            baseline = time.monotonic() - started

            core.create_namespaced_config_map(
                NAMESPACE, {"metadata": {"name": "ca"}, "data": {"ca.crt": server.ca_pem.decode()}}
            )
            for g, (client_id, secret) in enumerate(credentials.items()):
                data = {"clientId": client_id, "clientSecret": secret}
                encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
                core.create_namespaced_secret(NAMESPACE, {"metadata": {"name": f"creds-{g}"}, "data": encoded})

            operator = Operator(Settings(allowed_token_hosts=("127.0.0.1",), kubeconfig=str(kubeconfig)))
            operator.start()
            cluster.reset_counts()
            started = time.monotonic()
            for i in range(n):
                spec = {
                    "tokenURL": server.token_url,
                    "credentialsRef": {"name": f"creds-{i % groups}"},
                    "caBundleRef": {"name": "ca"},
                }
                body = {
                    "apiVersion": "tokensync.io/v1alpha1",
                    "kind": "ClientCredential",
                    "metadata": {"name": f"cc-{i}"},
                    "spec": spec,
                }
                custom.create_namespaced_custom_object("tokensync.io", "v1alpha1", NAMESPACE, "clientcredentials", body)
            created = time.monotonic() - started
            wait_until(lambda: ready_count(cluster) == n, args.timeout)
            all_ready = time.monotonic() - started
            time.sleep(1)  # let trailing watch events settle before counting writes
            writes = Counter({k: v for k, v in cluster.write_counts().items() if k[0] != "clientcredentials"})
            exchanges = server.issued

            operator.halt()
            server.reset()
            cluster.reset_counts()
            started = time.monotonic()
            operator.start()
            # After a restart every resource gets one round; status is already current, so
            # a round writes nothing. Give it a fixed grace period, then count.
            time.sleep(min(10.0, 2 + n / 50))
            restart_exchanges = server.issued
            restart_writes = dict(sorted(cluster.write_counts().items()))
            still_ready = ready_count(cluster)
            operator.halt()
        client.close()

    write_total = sum(writes.values())
    print(f"resources: {n}, distinct credentials: {groups}")
    print(f"baseline: {n} plain Secret creates took {baseline:.2f}s ({n / baseline:.0f}/s)")
    print(f"created {n} ClientCredentials in {created:.2f}s; all Ready after {all_ready:.2f}s ({n / all_ready:.0f}/s)")
    print(f"ratio: time to Ready / baseline creates = {all_ready / baseline:.2f}x")
    print(f"exchanges: {exchanges} (one per resource would be {n}: {exchanges / n:.3f}x)")
    print(f"API writes per resource: {write_total / n:.2f} ({dict(sorted(writes.items()))})")
    print(f"restart: {restart_exchanges} exchanges, {restart_writes} API writes, {still_ready}/{n} still Ready")


if __name__ == "__main__":
    main()
