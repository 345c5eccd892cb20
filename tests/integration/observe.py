"""What a user sees of a ClientCredential, read from the API stand-in: conditions, failures, events."""

from __future__ import annotations

from typing import Any

from .conftest import Api


def has_condition(api: Api, name: str, type_: str, status: str, reason: str | None = None) -> bool:
    found = api.condition(name, type_)
    return found.get("status") == status and (reason is None or found.get("reason") == reason)


def last_failure(api: Api, name: str) -> dict[str, Any]:
    return dict(api.status(name).get("lastFailure") or {})


def events_for(api: Api, name: str) -> list[dict[str, Any]]:
    """The Events about one ClientCredential (core/v1 or events.k8s.io/v1 shape), oldest first."""
    found = []
    for event in api.events():
        about = event.get("involvedObject") or event.get("regarding") or {}
        if about.get("kind") == "ClientCredential" and about.get("name") == name:
            found.append(event)
    return sorted(found, key=lambda e: (e.get("lastTimestamp") or "", e["metadata"].get("resourceVersion", "")))


def has_event(api: Api, name: str, type_: str, reason: str) -> dict[str, Any] | None:
    for event in events_for(api, name):
        if event.get("type") == type_ and event.get("reason") == reason:
            return event
    return None
