"""Generate the ClientCredential CustomResourceDefinition from the pydantic models.

Pydantic emits JSON Schema (``$defs``/``$ref``, ``anyOf`` with ``null`` for
optional fields, titles); the API server wants a *structural* OpenAPI v3
schema: every node typed, no references, no ``anyOf`` of types. The
conversion below is the whole difference.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml
from pydantic import BaseModel

from . import models

_DROPPED_KEYS = frozenset({"title", "$defs"})


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    """Resolve $refs, collapse Optional[...] and drop what a structural schema does not allow."""
    if isinstance(node, list):
        return [_inline(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    while "$ref" in node or "anyOf" in node:
        if "$ref" in node:
            target = copy.deepcopy(defs[node.pop("$ref").rsplit("/", 1)[-1]])
            node = {**target, **node}  # the referring site's description/default win
        if "anyOf" in node:
            variants = [v for v in node.pop("anyOf") if v.get("type") != "null"]
            if len(variants) != 1:
                raise ValueError(f"cannot express a union in a structural schema: {variants}")
            node = {**variants[0], **node}
    if node.get("default", ...) is None:
        del node["default"]
    out = {key: _inline(value, defs) for key, value in node.items() if key not in _DROPPED_KEYS}
    if out.get("type") == "object" and "properties" not in out and "additionalProperties" not in out:
        out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def openapi_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of one model, as the CRD embeds it."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.get("$defs", {})
    schema: dict[str, Any] = _inline(raw, defs)
    return schema


def _status_schema() -> dict[str, Any]:
    schema = openapi_schema(models.ClientCredentialStatus)
    conditions = schema["properties"]["conditions"]
    # Conditions are a map keyed by type: server-side apply and strategic merges keep them apart.
    conditions["x-kubernetes-list-type"] = "map"
    conditions["x-kubernetes-list-map-keys"] = ["type"]
    conditions["maxItems"] = 8
    return schema


PRINTER_COLUMNS = [
    {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
    {
        "name": "Reason",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
        "priority": 1,
    },
    {"name": "Secret", "type": "string", "jsonPath": ".status.secretName"},
    # "string", not "date": the API server renders a date column as the time *since* it, so a future
    # expiry would read "<invalid>". The timestamp itself reads right (RFC 3339, UTC).
    {"name": "Expires", "type": "string", "jsonPath": ".status.expiresAt"},
    {"name": "Renews", "type": "string", "jsonPath": ".status.renewalTime", "priority": 1},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def build_crd() -> dict[str, Any]:
    """The CustomResourceDefinition for ClientCredential, as a plain dict."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{models.PLURAL}.{models.GROUP}",
            "labels": {"app.kubernetes.io/name": "tokensync", "app.kubernetes.io/component": "crd"},
        },
        "spec": {
            "group": models.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": models.KIND,
                "listKind": f"{models.KIND}List",
                "plural": models.PLURAL,
                "singular": models.SINGULAR,
                "shortNames": list(models.SHORT_NAMES),
                "categories": ["tokensync"],
            },
            "versions": [
                {
                    "name": models.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "ClientCredential exchanges OAuth client credentials for an access "
                            "token and keeps it fresh in a Secret.",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": openapi_schema(models.ClientCredentialSpec),
                                "status": _status_schema(),
                            },
                        }
                    },
                }
            ],
        },
    }


def render_crd_yaml() -> str:
    """The CRD as the YAML committed under crds/ (stable key order, diff-friendly)."""
    header = "# Generated by `tokensync crd` from operator/tokensync/models.py. Do not edit.\n"
    return header + yaml.safe_dump(build_crd(), sort_keys=False, width=120)
