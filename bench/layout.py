"""What the bench creates, and where: namespaces, credentials, ClientCredentials, per group.

Groups live in their own namespaces where the measurement needs to tell them apart: the API
stand-in counts requests by namespace, so the per-refresh window can leave the dedupe group out.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from . import kube
from .sizes import Size

CA_NAME = "bench-ca"
REFRESH_NS = "bench-refresh"
DEDUPE_NS = "bench-dedupe"
FAILOVER_NS = "bench-failover"
ELECTION_NS = "bench-system"
DEDUPE_CLIENT = "dedupe"


@dataclass(frozen=True)
class Resource:
    """One ClientCredential, its credentials Secret and the client id the token server knows it by."""

    namespace: str
    name: str
    credentials: str
    client_id: str
    group: str

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def client_secret(self) -> str:
        return f"s3cret-{self.client_id}"

    def body(self, token_url: str) -> kube.JsonDict:
        return kube.client_credential(self.namespace, self.name, token_url, self.credentials, CA_NAME, self.group)

    def credentials_body(self) -> kube.JsonDict:
        return kube.credentials_secret(self.namespace, self.credentials, self.client_id, self.client_secret, self.group)


@dataclass(frozen=True)
class Layout:
    size: Size

    @cached_property
    def population_namespaces(self) -> list[str]:
        return [f"bench-{i}" for i in range(self.size.namespaces)]

    @property
    def namespaces(self) -> list[str]:
        return [*self.population_namespaces, REFRESH_NS, DEDUPE_NS, FAILOVER_NS, ELECTION_NS]

    def _population(self, start: int, stop: int, group: str) -> list[Resource]:
        spaces = self.population_namespaces
        return [
            Resource(spaces[i % len(spaces)], f"cc-{i:05d}", f"cred-{i:05d}", f"pop-{i}", group)
            for i in range(start, stop)
        ]

    @cached_property
    def bulk(self) -> list[Resource]:
        return self._population(0, self.size.bulk, "bulk")

    @cached_property
    def wave(self) -> list[Resource]:
        return self._population(self.size.bulk, self.size.population, "wave")

    @cached_property
    def refresh(self) -> list[Resource]:
        return [
            Resource(REFRESH_NS, f"refresh-{j:03d}", f"refresh-cred-{j:03d}", f"refresh-{j}", "refresh")
            for j in range(self.size.refresh_group)
        ]

    @cached_property
    def dedupe(self) -> list[Resource]:
        # One credentials Secret for all K: identical credentials.
        return [
            Resource(DEDUPE_NS, f"dedupe-{j:03d}", "dedupe-cred", DEDUPE_CLIENT, "dedupe")
            for j in range(self.size.dedupe_group)
        ]

    @cached_property
    def failover(self) -> list[Resource]:
        return [
            Resource(FAILOVER_NS, f"failover-{j:03d}", f"failover-cred-{j:03d}", f"failover-{j}", "failover")
            for j in range(self.size.failover_group)
        ]

    @cached_property
    def probe(self) -> Resource:
        """Created right after the leader is killed: the new leader acts when it turns Ready."""
        return Resource(FAILOVER_NS, "failover-probe", "failover-probe-cred", "failover-probe", "probe")

    @property
    def everything(self) -> list[Resource]:
        return [*self.bulk, *self.wave, *self.refresh, *self.dedupe, *self.failover, self.probe]

    def token_server_credentials(self) -> dict[str, str]:
        return {r.client_id: r.client_secret for r in self.everything}

    def credentials_bodies(self) -> list[kube.JsonDict]:
        seen: set[tuple[str, str]] = set()
        bodies = []
        for resource in self.everything:
            if (resource.namespace, resource.credentials) not in seen:
                seen.add((resource.namespace, resource.credentials))
                bodies.append(resource.credentials_body())
        return bodies
