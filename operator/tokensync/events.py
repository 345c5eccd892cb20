"""Kubernetes Events about ClientCredentials (``kubectl describe`` shows them).

Posted as core/v1 Events, the way client-go's event recorder writes them. An Event that
cannot be posted is logged and dropped: it never fails a round.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from . import models
from .core import rfc3339
from .kubeapi import EVENTS, KubeClient, KubeError
from .status import Event

logger = logging.getLogger("tokensync.events")
COMPONENT = "tokensync"


def render_event(resource: Mapping[str, Any], event: Event, now: datetime, instance: str) -> dict[str, Any]:
    meta = resource.get("metadata") or {}
    stamp = rfc3339(now)
    return {
        "apiVersion": "v1",
        "kind": "Event",
        # The apiserver's own scheme: the object's name and a unique suffix.
        "metadata": {"name": f"{meta.get('name')}.{secrets.token_hex(8)}", "namespace": meta.get("namespace")},
        "involvedObject": {
            "apiVersion": f"{models.GROUP}/{models.VERSION}",
            "kind": models.KIND,
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "type": event.type,
        "reason": event.reason,
        "message": event.message[:1024],
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": instance,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


class EventRecorder:
    def __init__(self, client: KubeClient, instance: str) -> None:
        self._client = client
        self._instance = instance

    async def post(self, resource: Mapping[str, Any], event: Event) -> None:
        meta = resource.get("metadata") or {}
        body = render_event(resource, event, datetime.now(UTC), self._instance)
        try:
            await self._client.create(EVENTS, str(meta.get("namespace")), body)
        except KubeError as exc:
            logger.warning(
                "Could not post the %s event: %s",
                event.reason,
                exc,
                extra={"resource": f"{meta.get('namespace')}/{meta.get('name')}"},
            )
