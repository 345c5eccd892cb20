"""Throughput check: Secret creates/s must stay flat as the fake cluster fills up.

Run: ``.venv/bin/python tests/devcluster/bench_creates.py [--total 2000] [--window 200]``.
Not collected by pytest (the file name does not start with ``test_``).
"""

from __future__ import annotations

import argparse
import time

import kubernetes

from tokensync.dev.cluster import FakeCluster


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--total", type=int, default=2000)
    parser.add_argument("--window", type=int, default=200)
    args = parser.parse_args()

    with (
        FakeCluster() as cluster,
        kubernetes.client.ApiClient(kubernetes.client.Configuration(host=cluster.url)) as api,
    ):
        core = kubernetes.client.CoreV1Api(api)
        stamps: list[float] = [time.perf_counter()]
        for i in range(args.total):
            body = {"metadata": {"name": f"s-{i:05d}", "labels": {"bench": "yes"}}, "stringData": {"k": "v"}}
            core.create_namespaced_secret("default", body)
            stamps.append(time.perf_counter())

        first = args.window / (stamps[args.window] - stamps[0])
        last = args.window / (stamps[-1] - stamps[-1 - args.window])
        overall = args.total / (stamps[-1] - stamps[0])
        print(f"creates/s: first {args.window}: {first:.0f}, last {args.window}: {last:.0f}, overall: {overall:.0f}")
        print(f"ratio last/first: {last / first:.2f}")
        assert len(cluster.list("v1", "secrets")) == args.total
        print(f"write counts: {cluster.write_counts()}")


if __name__ == "__main__":
    main()
