"""The credentials-hash key: made once, shared by every replica, never an outage when it cannot be kept."""

from __future__ import annotations

import asyncio
import base64
import logging
from typing import Any

import pytest

from tokensync.dev.cluster import FakeCluster
from tokensync.hashkey import KEY_BYTES, KEY_FIELD, key_from_secret, load_or_create_key
from tokensync.kubeapi import SECRETS, KubeClient, KubeError

NAME = "tokensync-hash-key"


async def test_the_first_start_makes_a_key_and_later_starts_read_the_same(
    cluster: FakeCluster, ns: str, client: KubeClient
) -> None:
    first = await load_or_create_key(client, ns, NAME)
    assert len(first) == KEY_BYTES
    stored = cluster.get("v1", "secrets", ns, NAME)
    assert stored is not None
    assert base64.b64decode(stored["data"][KEY_FIELD]) == first
    labels = stored["metadata"]["labels"]
    assert labels.get("app.kubernetes.io/managed-by") != "tokensync", "it must never look like a target Secret"
    assert await load_or_create_key(client, ns, NAME) == first


async def test_replicas_starting_together_agree_on_one_key(ns: str, client: KubeClient) -> None:
    keys = await asyncio.gather(*(load_or_create_key(client, ns, NAME) for _ in range(5)))
    assert len(set(keys)) == 1


async def test_a_damaged_key_gives_a_key_of_this_process_and_is_left_alone(
    cluster: FakeCluster, ns: str, client: KubeClient, caplog: pytest.LogCaptureFixture
) -> None:
    await client.create(SECRETS, ns, {"metadata": {"name": NAME}, "data": {KEY_FIELD: "bm90LWEta2V5"}})
    with caplog.at_level(logging.WARNING, logger="tokensync.hashkey"):
        key = await load_or_create_key(client, ns, NAME)
    assert len(key) == KEY_BYTES
    assert "no usable key" in caplog.text
    stored = cluster.get("v1", "secrets", ns, NAME)
    assert stored is not None
    assert stored["data"][KEY_FIELD] == "bm90LWEta2V5"


class RefusingClient:
    """A client whose every call is refused, as without RBAC."""

    async def get(self, *args: Any) -> Any:
        raise KubeError(403, "Forbidden", 'secrets "tokensync-hash-key" is forbidden')

    async def create(self, *args: Any) -> Any:
        raise AssertionError("not reached")


async def test_without_rbac_the_operator_runs_with_a_key_of_its_own(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="tokensync.hashkey"):
        key = await load_or_create_key(RefusingClient(), "tokensync", NAME)  # type: ignore[arg-type]
    assert len(key) == KEY_BYTES
    assert "one extra exchange" in caplog.text
    assert base64.b64encode(key).decode() not in caplog.text, "the key itself is never logged"


@pytest.mark.parametrize(
    "secret",
    [
        None,
        {},
        {"data": {}},
        {"data": {KEY_FIELD: "***"}},
        {"data": {KEY_FIELD: base64.b64encode(b"short").decode()}},
        {"data": "not a map"},
    ],
)
def test_key_from_secret_rejects_anything_but_a_long_enough_key(secret: Any) -> None:
    assert key_from_secret(secret) is None


def test_key_from_secret_reads_a_good_key() -> None:
    key = b"k" * KEY_BYTES
    assert key_from_secret({"data": {KEY_FIELD: base64.b64encode(key).decode()}}) == key
