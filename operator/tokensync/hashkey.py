"""The key of the credentials hash: made once, kept in a Secret of the operator's own namespace.

The target Secret's ``tokensync.io/credentials-hash`` annotation is an HMAC of the client
credentials (``secrets.fingerprint()``). Workloads can read that Secret; without the key they
cannot test guesses of a weak client secret against the annotation.

Every replica reads the same key at start; the first one to start creates it (a replica that
loses the race reads the winner's). If the key cannot be read or kept (no RBAC, the API is
down), the operator runs with a key of its own for this process: the only cost is one exchange
per resource, once, because the hashes in the Secrets no longer match — never an outage.
"""

from __future__ import annotations

import base64
import binascii
import logging
import secrets

from .kubeapi import SECRETS, KubeClient, KubeError

logger = logging.getLogger("tokensync.hashkey")

KEY_FIELD = "key"
KEY_BYTES = 32
#: Not ``app.kubernetes.io/managed-by: tokensync``: that label selects *target* Secrets.
KEY_LABELS = {"app.kubernetes.io/part-of": "tokensync", "app.kubernetes.io/component": "credentials-hash-key"}


def new_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def key_from_secret(secret: dict[str, object] | None) -> bytes | None:
    """The key a Secret holds, or None when it holds none (or a damaged one)."""
    data = (secret or {}).get("data")
    raw = data.get(KEY_FIELD) if isinstance(data, dict) else None
    if not isinstance(raw, str):
        return None
    try:
        key = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        return None
    return key if len(key) >= 16 else None


def key_secret(namespace: str, name: str, key: bytes) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(KEY_LABELS)},
        "data": {KEY_FIELD: base64.b64encode(key).decode()},
    }


async def load_or_create_key(client: KubeClient, namespace: str, name: str) -> bytes:
    """The shared key, creating it on first start; a process-local key if it cannot be kept."""
    where = f"Secret {namespace}/{name}"
    try:
        for _ in range(2):  # a create that loses the race to another replica reads the winner's key
            existing = await client.get(SECRETS, namespace, name)
            if existing is not None:
                key = key_from_secret(existing)
                if key is not None:
                    return key
                logger.warning("%s holds no usable key; using a key of this process only.", where)
                return new_key()
            key = new_key()
            try:
                await client.create(SECRETS, namespace, key_secret(namespace, name, key))
            except KubeError as exc:
                if exc.status == 409:
                    continue
                raise
            logger.info("Created the credentials-hash key in %s.", where)
            return key
    except KubeError as exc:
        logger.warning(
            "Cannot read or create the credentials-hash key in %s (%s); using a key of this process only: "
            "each resource costs one extra exchange after a restart.",
            where,
            exc,
        )
    return new_key()
