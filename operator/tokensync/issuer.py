"""Issuing tokens cheaply: one exchange per credential, bounded concurrency per host.

- *Single flight*: resources that ask for a token with the same fingerprint
  (same endpoint, dialect, credentials and parameters) while an exchange is in
  flight share its result — or its failure.
- *Sharing*: a token issued for one fingerprint is reused by the next resource
  with that fingerprint as long as the caller's policy still accepts it (it is
  not yet past the caller's renewal point), so N identical resources cost one
  exchange per lifetime, not N.
- *Concurrency*: at most ``max_per_host`` exchanges run against one token host
  at a time, so a restart with many resources does not stampede the endpoint.

Tokens stay in memory only, in a bounded map.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from . import exchange as ex
from .core import Clock, StoredToken, utcnow
from .metrics import Metrics
from .models import ClientCredentialSpec, Reason


@dataclass(frozen=True)
class IssueRequest:
    spec: ClientCredentialSpec
    url: str
    credentials: ex.ClientCredentials
    ca_pem: str | None
    fingerprint: str


class Issuer:
    def __init__(
        self,
        pool: ex.ClientPool,
        allowed_hosts: Iterable[str],
        *,
        max_per_host: int = 8,
        deadline: float = ex.DEFAULT_DEADLINE_SECONDS,
        clock: Clock = utcnow,
        remember: int = 4096,
        metrics: Metrics | None = None,
    ) -> None:
        self._pool = pool
        self.allowed_hosts = frozenset(allowed_hosts)
        self._max_per_host = max_per_host
        self._deadline = deadline
        self._clock = clock
        self._remember = remember
        self._metrics = metrics
        #: fingerprint -> the exchange in flight and when it started
        self._inflight: dict[str, tuple[asyncio.Future[StoredToken], datetime]] = {}
        self._recent: OrderedDict[str, StoredToken] = OrderedDict()
        self._host_limits: dict[str, asyncio.Semaphore] = {}
        #: Exchanges actually sent (for tests and the benchmark).
        self.exchanges = 0

    def recent(self, fingerprint: str) -> StoredToken | None:
        return self._recent.get(fingerprint)

    async def issue(
        self,
        request: IssueRequest,
        *,
        accept: Callable[[StoredToken], bool] | None = None,
        minted_after: datetime | None = None,
    ) -> StoredToken:
        """A token for ``request``: a shared recent one if ``accept`` takes it, else a new exchange.

        With ``minted_after`` (a requested refresh), only an exchange started at or after that
        moment will do: no recent token, and no flight that another resource started earlier.
        """
        if minted_after is None:
            recent = self._recent.get(request.fingerprint)
            if recent is not None and accept is not None and accept(recent):
                return recent
        inflight = self._inflight.get(request.fingerprint)
        if inflight is not None and (minted_after is None or inflight[1] >= minted_after):
            return await asyncio.shield(inflight[0])
        # The exchange runs in a task of its own, not in the first caller: a caller that is
        # cancelled (its resource was deleted) must not cancel the others sharing the flight.
        flight = asyncio.ensure_future(self._exchange(request))
        if inflight is None:
            self._inflight[request.fingerprint] = (flight, self._clock())
            flight.add_done_callback(lambda done: self._landed(request.fingerprint, done))
        else:  # a flight of its own: nobody else awaits it, so its failure is retrieved here
            flight.add_done_callback(lambda done: done.cancelled() or done.exception())
        return await asyncio.shield(flight)

    def _landed(self, fingerprint: str, flight: asyncio.Future[StoredToken]) -> None:
        del self._inflight[fingerprint]
        if flight.cancelled() or flight.exception() is not None:  # exception() marks it retrieved
            return
        self._recent[fingerprint] = flight.result()
        self._recent.move_to_end(fingerprint)
        while len(self._recent) > self._remember:
            self._recent.popitem(last=False)

    async def _exchange(self, request: IssueRequest) -> StoredToken:
        host = (urlsplit(request.url).hostname or "").lower()
        limit = self._host_limits.setdefault(host, asyncio.Semaphore(self._max_per_host))
        async with limit:
            client = self._pool.get(request.ca_pem)
            # The lifetime counts from before the request was sent, cut to whole seconds as the
            # Secret and status store it: the schedule is then the same before and after a restart.
            issued_at = self._clock().replace(microsecond=0)
            started = asyncio.get_running_loop().time()
            sent = ex.host_allowed(request.url, self.allowed_hosts)
            reason: str = Reason.TOKEN_ISSUED
            try:
                issued = await ex.exchange(
                    client,
                    request.spec,
                    request.url,
                    request.credentials,
                    allowed_hosts=self.allowed_hosts,
                    deadline=self._deadline,
                )
            except ex.ExchangeError as exc:
                reason = exc.reason
                raise
            except asyncio.CancelledError:
                reason = "Cancelled"  # not a success: the operator is shutting down
                raise
            except Exception:
                reason = "Error"  # a defect, contained by the caller's round; never counted as issued
                raise
            finally:
                if sent:
                    self.exchanges += 1
                    if self._metrics is not None:
                        elapsed = asyncio.get_running_loop().time() - started
                        self._metrics.exchange_done(host, reason, elapsed)
        expires_at = issued_at + timedelta(seconds=issued.expires_in)
        if issued.expires_at_epoch is not None:  # the token's own word (a JWT's exp), to the second
            expires_at = datetime.fromtimestamp(issued.expires_at_epoch, UTC)
        return StoredToken(
            access_token=issued.access_token,
            token_type=issued.token_type,
            scope=issued.scope,
            issued_at=issued_at,
            expires_at=expires_at,
            fingerprint=request.fingerprint,
            lifetime_source=issued.lifetime_source.value,
        )

    async def aclose(self) -> None:
        await self._pool.aclose()
