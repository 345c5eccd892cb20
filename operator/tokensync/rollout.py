"""Rollout restarts: workloads that read the token only at start-up get new pods when it changes.

What ``kubectl rollout restart`` does: a pod-template annotation changes, so the controller of
the Deployment, StatefulSet or DaemonSet rolls its pods. One merge patch per workload; no read.

The reconciler asks for it only when a new token reached the Secret and replaced another one
(a refresh, a spec or a credentials change) — never for the first token, never when an operator
restart or a leader change finds the token unchanged — so each token restarts a workload at most
once. A missing or forbidden workload is reported, never a failure of the token sync.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from .core import rfc3339
from .kubeapi import KubeClient, KubeError, Resource
from .models import RolloutRestartTarget, WorkloadKind

RESTARTED_AT = "tokensync.io/restartedAt"

WORKLOADS: dict[WorkloadKind, Resource] = {
    WorkloadKind.DEPLOYMENT: Resource("apps", "v1", "deployments"),
    WorkloadKind.STATEFULSET: Resource("apps", "v1", "statefulsets"),
    WorkloadKind.DAEMONSET: Resource("apps", "v1", "daemonsets"),
}


def restart_patch(at: datetime) -> dict[str, object]:
    return {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: rfc3339(at)}}}}}


@dataclass(frozen=True)
class Outcome:
    restarted: tuple[str, ...]
    #: "Kind/name: why" for each workload that could not be restarted.
    failed: tuple[str, ...]


def describe_failure(exc: KubeError) -> str:
    if exc.not_found:
        return "not found"
    if exc.status == 403:
        return "forbidden (the chart grants it with rolloutRestart.enabled=true)"
    return str(exc)


async def restart_workloads(
    kube: KubeClient, namespace: str, targets: Sequence[RolloutRestartTarget], at: datetime
) -> Outcome:
    restarted: list[str] = []
    failed: list[str] = []
    patch = restart_patch(at)
    for target in targets:
        ref = f"{target.kind.value}/{target.name}"
        try:
            await kube.merge_patch(WORKLOADS[target.kind], namespace, target.name, patch)
        except KubeError as exc:
            failed.append(f"{ref}: {describe_failure(exc)}")
        else:
            restarted.append(ref)
    return Outcome(tuple(restarted), tuple(failed))
