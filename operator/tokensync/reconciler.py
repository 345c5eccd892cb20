"""One reconciliation round for one ClientCredential: gather, decide, act, report.

- *gather*: parse the spec; take the target Secret, the credentials Secret and the CA bundle
  from the caches (``Sources``; all in the resource's own namespace) — never a read of the API;
- *decide*: ``renewal.plan()`` says whether to issue a token now or when to look again;
- *act*: exchange through the ``Issuer`` and write the Secret with ``apply_secret()``;
- *report*: build the status (``status.py``), patch only what changed, post
  events on transitions.

The round never raises for an expected failure: it is folded into status. It returns
when the next round should run. It raises ``Pending`` (before writing anything) when it
needs the data of a referenced object that is still being fetched: the fetch re-queues it.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from pydantic import ValidationError

from . import models, renewal
from .core import Clock, StoredToken
from .exchange import ClientCredentials, ExchangeError, InvalidCABundleError, host_allowed
from .hashkey import new_key
from .issuer import Issuer, IssueRequest
from .kubeapi import SECRETS, KubeClient, KubeError
from .metrics import Metrics
from .models import PRECONDITION_REASONS, ClientCredentialSpec, ClientCredentialStatus, Reason, validation_summary
from .references import Loaded
from .rollout import restart_workloads
from .secrets import (
    ANNOTATION_CREDENTIALS_HASH,
    ANNOTATION_INPUTS_VERSION,
    Owner,
    Ownership,
    SecretConflictError,
    apply_secret,
    fingerprint,
    inputs_version,
    ownership,
    read_token,
    release_patch,
    render_secret,
)
from .status import (
    Event,
    Failure,
    Situation,
    build_status,
    failure_record,
    keeps_failure,
    same_token,
    status_patch,
    to_json,
    transition_events,
)

REFRESH_ANNOTATION = "tokensync.io/refresh-requested-at"

Key = tuple[str, str]
EventSink = Callable[[Mapping[str, Any], Event], Awaitable[None]]


class Sources(Protocol):
    """What a round reads, all from memory (``controller.py`` keeps the caches)."""

    def target(self, key: Key) -> dict[str, Any] | None:
        """The target Secret if it carries tokensync's managed-by label, else None."""

    def secret_version(self, key: Key) -> str | None:
        """A Secret's resourceVersion, or None if it does not exist."""

    def secret_data(self, key: Key) -> Loaded | None:
        """A Secret's data (None: it does not exist); raises ``Pending`` while it is fetched."""

    def configmap_version(self, key: Key) -> str | None: ...

    def configmap_data(self, key: Key) -> Loaded | None: ...

    def remember_secret(self, secret: dict[str, Any]) -> None:
        """Our own write's result, so the next round does not wait for its watch event."""


@dataclass(slots=True)
class Record:
    """What the operator remembers about one resource between rounds.

    Only what a restart may lose: every decision that must survive one (the inputs of the last
    failed exchange, an unfulfilled refresh request, the backoff) is kept in status.
    """

    uid: str = ""
    #: The status as last written (or read at start), as compact JSON: a few hundred bytes per
    #: resource instead of a few KiB of dicts (it is parsed once per round).
    status_json: str | None = None
    #: The last token issued for it: restores a deleted or tampered Secret, or retries a refused
    #: write, without an exchange.
    token: StoredToken | None = None
    #: The exact time of the last failure (status keeps whole seconds only).
    failure_at: datetime | None = None
    #: The resourceVersion of the Secret as we last wrote or read it: our own write's watch event is no news.
    secret_version: str | None = None
    #: (generation, refresh annotation) of the last round: other changes (our status writes) are no news.
    seen: tuple[Any, Any] = (None, None)
    #: The refresh request the remembered token fulfilled: a round retried because its status
    #: write failed must not exchange again for it.
    refresh_fulfilled: str | None = None


@dataclass
class _Round:
    #: The token the target Secret holds at the end of the round (what status reports).
    token: StoredToken | None = None
    #: The token it held at the start.
    held: StoredToken | None = None
    failure: Failure | None = None
    #: An exchange minted a token this round.
    issued: bool = False
    #: The Secret now holds the token the round wanted it to hold.
    synced: bool = False
    #: Writing the Secret failed: Ready is False whatever token it still holds.
    write_failed: bool = False
    #: Why the token was issued (a renewal.Verdict reason); "RenewalDue" is routine.
    trigger: str = ""
    suspended: bool = False
    fingerprint: str | None = None
    renewal: models.Renewal = field(default_factory=models.Renewal)
    secret_name: str = ""
    #: The refresh request a new token fulfilled this round.
    refresh_fulfilled: str | None = None
    #: A refresh request still waiting for a token (kept in status across restarts).
    refresh_pending: str | None = None
    rollout_targets: list[models.RolloutRestartTarget] = field(default_factory=list)


def _decode(data: Mapping[str, str], key: str) -> str | None:
    raw = data.get(key)
    if raw is None:
        return None
    try:
        return base64.b64decode(raw, validate=True).decode().strip()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None


@dataclass(frozen=True)
class _Inputs:
    """What the round knows about the exchange's inputs before deciding."""

    url: str
    fingerprint: str
    #: ``inputs_version()`` of the current spec and credentials Secret.
    version: str
    #: None when the credentials were not read (the Secret's token provably matches them).
    credentials: ClientCredentials | None
    #: The CA bundle object's resourceVersion ("" without one): not part of the token's identity,
    #: but a new CA is a reason to retry a failed exchange at once (a TLS failure may be fixed).
    ca_version: str = ""

    @property
    def attempt(self) -> str:
        """What status keeps of a failed attempt's inputs (``lastFailure.inputsHash``)."""
        if not self.ca_version:
            return self.fingerprint
        return hashlib.sha256(f"{self.fingerprint}/{self.ca_version}".encode()).hexdigest()[:32]


class Reconciler:
    def __init__(
        self,
        kube: KubeClient,
        issuer: Issuer,
        *,
        clock: Clock,
        post_event: EventSink,
        metrics: Metrics | None = None,
        hash_key: bytes | None = None,
    ) -> None:
        self.kube = kube
        self.issuer = issuer
        self.clock = clock
        self.post_event = post_event
        self.metrics = metrics
        #: The credentials-hash key (``hashkey.py``); the manager sets the shared one at start.
        self.hash_key = hash_key or new_key()

    # gather ----------------------------------------------------------------------------------

    def _credentials(
        self, namespace: str, spec: ClientCredentialSpec, loaded: Loaded | None
    ) -> tuple[ClientCredentials | None, Failure | None]:
        ref = spec.credentials_ref
        if loaded is None:
            return None, Failure(Reason.CREDENTIALS_NOT_FOUND, f"Secret {ref.name!r} not found in {namespace!r}")
        values: dict[str, str] = {}
        for key in (ref.client_id_key, ref.client_secret_key):
            value = _decode(loaded.data, key)
            if not value:
                return None, Failure(Reason.CREDENTIALS_NOT_FOUND, f"Secret {ref.name!r} has no non-empty key {key!r}")
            values[key] = value
        return ClientCredentials(values[ref.client_id_key], values[ref.client_secret_key]), None

    def _ca_version(
        self, sources: Sources, namespace: str, spec: ClientCredentialSpec
    ) -> tuple[str | None, Failure | None]:
        """The CA bundle object's resourceVersion ("" without one); it must exist (its data is
        read only when a token is issued)."""
        ref = spec.ca_bundle_ref
        if ref is None:
            return "", None
        secret = ref.kind is models.CABundleKind.SECRET
        key = (namespace, ref.name)
        version = sources.secret_version(key) if secret else sources.configmap_version(key)
        if version is None:
            return None, Failure(Reason.INVALID_SPEC, f"caBundleRef: {ref.kind} {ref.name!r} not found")
        return version, None

    def _ca_bundle(
        self, sources: Sources, namespace: str, spec: ClientCredentialSpec
    ) -> tuple[str | None, Failure | None]:
        ref = spec.ca_bundle_ref
        if ref is None:
            return None, None
        if ref.kind is models.CABundleKind.SECRET:
            loaded = sources.secret_data((namespace, ref.name))
            pem = _decode(loaded.data, ref.key) if loaded else None
        else:
            loaded = sources.configmap_data((namespace, ref.name))
            pem = loaded.data.get(ref.key) if loaded else None
        if not pem:
            return None, Failure(Reason.INVALID_SPEC, f"caBundleRef: {ref.kind} {ref.name!r} has no key {ref.key!r}")
        return pem, None

    def _inputs(
        self,
        sources: Sources,
        namespace: str,
        spec: ClientCredentialSpec,
        target: Mapping[str, Any] | None,
        token: StoredToken | None,
    ) -> tuple[_Inputs | None, Failure | None]:
        """The exchange's inputs, or the precondition that failed (checked before any request).

        The credentials are read only when needed: the Secret's token, minted from the same spec
        and the same version of the credentials Secret (its inputs-version annotation), provably
        has the current fingerprint.
        """
        url = spec.effective_token_url()
        if url is None:
            return None, Failure(Reason.INVALID_SPEC, "tokenURL is required when provider is oauth2")
        if not host_allowed(url, self.issuer.allowed_hosts):
            return None, Failure(
                Reason.HOST_NOT_ALLOWED,
                f"the token host of {url!r} is not in the operator's allowlist (--allowed-token-host)",
            )
        key = (namespace, spec.credentials_ref.name)
        version = sources.secret_version(key)
        if version is None:
            return None, self._credentials(namespace, spec, None)[1]
        current = inputs_version(spec, url, version)
        ca_version, failure = self._ca_version(sources, namespace, spec)
        if ca_version is None:
            return None, failure
        annotations = ((target or {}).get("metadata") or {}).get("annotations") or {}
        stored_fingerprint = annotations.get(ANNOTATION_CREDENTIALS_HASH)
        if (
            token is not None
            and token.fingerprint == stored_fingerprint
            and annotations.get(ANNOTATION_INPUTS_VERSION) == current
        ):
            return _Inputs(url, token.fingerprint, current, None, ca_version), None
        credentials, failure = self._credentials(namespace, spec, sources.secret_data(key))
        if credentials is None:
            return None, failure
        return (
            _Inputs(url, fingerprint(spec, url, credentials, self.hash_key), current, credentials, ca_version),
            None,
        )

    # one round -------------------------------------------------------------------------------

    async def _round(
        self, body: Mapping[str, Any], record: Record, old: ClientCredentialStatus, now: datetime, sources: Sources
    ) -> _Round:
        meta = body["metadata"]
        namespace, name, uid = meta["namespace"], meta["name"], meta.get("uid", "")
        owner = Owner(f"{models.GROUP}/{models.VERSION}", models.KIND, name, namespace, uid)
        try:
            spec = ClientCredentialSpec.model_validate(body.get("spec") or {})
        except ValidationError as exc:
            return _Round(
                failure=Failure(
                    Reason.INVALID_SPEC, "invalid spec: " + validation_summary(exc, root=("spec",), limit=3)
                ),
                secret_name=name,
            )

        result = _Round(
            renewal=spec.renewal,
            secret_name=spec.target_name(name),
            suspended=spec.suspend,
            rollout_targets=spec.rollout_restart_targets,
        )
        target = sources.target((namespace, result.secret_name))
        record.secret_version = ((target or {}).get("metadata") or {}).get("resourceVersion")
        if ownership(target, owner) is Ownership.FOREIGN:
            result.failure = Failure(
                Reason.SECRET_CONFLICT,
                f"Secret {result.secret_name!r} exists and is not managed by this ClientCredential; "
                "tokensync leaves it untouched",
            )
            return result
        result.held = read_token(target)
        result.token = record.token = current_token(record.token, result.held)

        inputs, result.failure = self._inputs(sources, namespace, spec, target, result.token)
        if inputs is None:
            return result
        result.fingerprint = inputs.fingerprint
        if not spec.suspend:
            request = (meta.get("annotations") or {}).get(REFRESH_ANNOTATION) or None
            if request is not None and request == old.pending_refresh_request:
                result.refresh_pending = request
            if request is not None and request == record.refresh_fulfilled != old.last_refresh_request:
                result.refresh_fulfilled = request  # fulfilled by the remembered token; status not yet written
            handled = (old.last_refresh_request, old.pending_refresh_request, record.refresh_fulfilled)
            fresh_request = request if request not in handled else None
            await self._issue_if_due(result, record, old, spec, inputs, fresh_request, owner, sources, now)
            if result.token is not None:
                matches = result.token.fingerprint == inputs.fingerprint
                await self._write_secret(
                    result, record, owner, spec, target, inputs.version if matches else None, sources
                )
            if result.synced and old.secret_name and old.secret_name != result.secret_name:
                await self._retire(body, owner, spec, old.secret_name, sources)
        return result

    async def _issue_if_due(
        self,
        result: _Round,
        record: Record,
        old: ClientCredentialStatus,
        spec: ClientCredentialSpec,
        inputs: _Inputs,
        fresh_request: str | None,
        owner: Owner,
        sources: Sources,
        now: datetime,
    ) -> None:
        """Ask the policy; if a token is due, get one (shared or new) and fold the outcome into ``result``."""
        failure = failure_record(old, record.failure_at)
        failed_hash = old.last_failure.inputs_hash if old.last_failure else None
        decision = renewal.plan(
            renewal.Input(
                now=now,
                token=_state(result.token),
                fingerprint=inputs.fingerprint,
                renewal=spec.renewal,
                seed=owner.uid,
                failure=failure,
                inputs_changed_since_failure=failure is not None
                and (
                    failure.reason in PRECONDITION_REASONS
                    or (failed_hash is not None and failed_hash != inputs.attempt)
                ),
                refresh_requested=fresh_request is not None,
                refresh_pending=result.refresh_pending is not None,
            )
        )
        if decision.issue is None:
            return
        credentials = inputs.credentials
        if credentials is None:  # trusted by version so far; an exchange needs the values
            credentials, result.failure = self._credentials(
                owner.namespace, spec, sources.secret_data((owner.namespace, spec.credentials_ref.name))
            )
            if credentials is None:
                return
        ca_pem, result.failure = self._ca_bundle(sources, owner.namespace, spec)
        if result.failure is not None:
            return
        request = IssueRequest(
            spec, inputs.url, credentials, ca_pem, fingerprint(spec, inputs.url, credentials, self.hash_key)
        )
        wanted = fresh_request or result.refresh_pending
        result.trigger = decision.issue.reason
        logger_for(owner).info("Issuing a token: %s.", decision.issue.message)
        current = result.token

        def acceptable(shared: StoredToken) -> bool:
            # Another resource's fresh token for the same inputs, not yet due for renewal.
            due = renewal.renewal_time(shared.issued_at, shared.expires_at, spec.renewal, owner.uid)
            return shared != current and now < due

        try:
            # A requested refresh takes no token minted before this round, shared or in flight.
            token = await self.issuer.issue(request, accept=acceptable, minted_after=now if wanted else None)
        except ExchangeError as exc:
            result.failure = Failure(
                exc.reason, exc.message, exc.http_status, exc.code, exc.retry_after, inputs.attempt
            )
            result.refresh_pending = wanted
            logger_for(owner).warning("Token exchange failed (%s): %s", exc.reason, exc.message)
        except InvalidCABundleError as exc:
            result.failure = Failure(Reason.INVALID_SPEC, f"caBundleRef: {exc}")
        else:
            result.issued = True
            result.token = record.token = token
            result.refresh_fulfilled, result.refresh_pending = wanted, None
            if wanted is not None:
                record.refresh_fulfilled = wanted

    async def _write_secret(
        self,
        result: _Round,
        record: Record,
        owner: Owner,
        spec: ClientCredentialSpec,
        target: dict[str, Any] | None,
        inputs: str | None,
        sources: Sources,
    ) -> None:
        """Make the target Secret hold ``result.token`` (a no-op when it already does).

        A refused write leaves ``result.token`` at what the Secret still holds (status reports the
        Secret, not our memory) and keeps the new token in memory for the retry.
        """
        assert result.token is not None
        try:
            applied = await apply_secret(self.kube, owner, render_secret(owner, spec, result.token, inputs), target)
        except SecretConflictError as exc:
            result.failure, result.token = Failure(Reason.SECRET_CONFLICT, str(exc)), None
        except KubeError as exc:
            # A quota, an admission webhook, a 5xx, a timeout: reported, retried with backoff.
            result.failure = Failure(
                Reason.SECRET_WRITE_FAILED, f"the API server refused to write Secret {result.secret_name!r}: {exc}"
            )
            result.write_failed, result.token = True, result.held
            logger_for(owner).warning("Writing Secret %s failed: %s", result.secret_name, exc)
        else:
            result.synced = True
            record.secret_version = applied.secret["metadata"].get("resourceVersion")
            if applied.written:
                sources.remember_secret(applied.secret)
                if self.metrics is not None:
                    self.metrics.secret_written(owner.namespace)
                if not result.issued:
                    logger_for(owner).info("Restored Secret %s from the current token.", result.secret_name)

    async def _retire(
        self, body: Mapping[str, Any], owner: Owner, spec: ClientCredentialSpec, old_name: str, sources: Sources
    ) -> None:
        """``target.name`` changed: delete the old Secret (Delete) or hand it over (Retain)."""
        old = sources.target((owner.namespace, old_name))
        if old is None or ownership(old, owner) is not Ownership.OURS:
            return  # already gone, or someone else's now
        if spec.target.deletion_policy is models.DeletionPolicy.DELETE:
            await self.kube.delete(SECRETS, owner.namespace, old_name)
            event = Event(
                "Normal",
                "SecretDeleted",
                f"deleted Secret {old_name}: target.name is now {spec.target_name(owner.name)}",
            )
        else:
            try:
                await self.kube.patch_secret(owner.namespace, old_name, release_patch(old, owner))
            except KubeError as exc:
                if not exc.not_found:
                    raise
            event = Event(
                "Normal",
                "SecretReleased",
                f"released Secret {old_name} (deletionPolicy Retain): tokensync no longer manages or refreshes it",
            )
        logger_for(owner).info("%s", event.message)
        await self.post_event(body, event)

    # report ----------------------------------------------------------------------------------

    async def reconcile(self, body: Mapping[str, Any], record: Record, sources: Sources) -> datetime | None:
        """Run one round and report it. Returns when to run the next one (None: only on change)."""
        now = self.clock()
        meta = body["metadata"]
        if record.status_json is None:
            record.status_json = compact_json(body.get("status") or {})
        written: dict[str, Any] = json.loads(record.status_json)
        try:
            old = ClientCredentialStatus.model_validate(written)
        except ValidationError:
            old = ClientCredentialStatus()
        result = await self._round(body, record, old, now, sources)
        # Reported and planned from the round's end: an exchange that took 30 s to time out is
        # retried a backoff after it failed, not after it started.
        now = self.clock()

        uid = meta.get("uid", "")
        token_state = _state(result.token)
        delivered = _delivered(result, old)
        inp = renewal.Input(
            now=now,
            token=token_state,
            # Unknown inputs (a precondition failed) never match: the token is not ready.
            fingerprint=result.fingerprint or "\x00unknown",
            renewal=result.renewal,
            seed=uid,
            refresh_pending=result.refresh_pending is not None,
        )
        not_ready = renewal.readiness(inp)  # the token alone decides; failures do not
        if result.write_failed:
            not_ready = renewal.Verdict(Reason.SECRET_WRITE_FAILED, "the Secret could not be written")
        old_reason = old.last_failure.reason if old.last_failure else None
        if result.failure is not None:
            record.failure_at = now
            new_record: renewal.FailureRecord | None = renewal.FailureRecord(
                old.failed_attempts + 1, now, result.failure.reason, result.failure.retry_after
            )
        elif keeps_failure(old_reason, delivered=delivered, synced=result.synced, ready=not_ready is None):
            new_record = failure_record(old, record.failure_at)
        else:
            new_record = None
        inp = dataclasses.replace(inp, failure=new_record)
        wake_at, retry_at = _next_wake(result, inp, now)
        renewal_at = (
            renewal.renewal_time(token_state.issued_at, token_state.expires_at, result.renewal, uid)
            if token_state
            else None
        )
        note = (
            renewal.clamp_note(token_state.issued_at, token_state.expires_at, result.renewal) if token_state else None
        )
        rollout = None
        if delivered and result.rollout_targets and (result.held is not None or old.issued_at is not None):
            rollout = await self._restart_workloads(body, result.rollout_targets, now)
        situation = Situation(
            now=now,
            generation=meta.get("generation"),
            # The Secret that holds the token: the old name until the renamed one is written.
            secret_name=result.secret_name if result.synced or not old.secret_name else old.secret_name,
            token=result.token,
            not_ready=not_ready,
            renewal_time=renewal_at,
            failure=result.failure,
            issued=delivered,
            secret_synced=result.synced,
            retry_at=retry_at,
            suspended=result.suspended,
            last_refresh_request=result.refresh_fulfilled or old.last_refresh_request,
            pending_refresh_request=result.refresh_pending,
            renewal_note=note,
            rollout=rollout,
        )
        new = build_status(old, situation)
        new_json = to_json(new)
        patch = status_patch(written, new_json)
        if patch is not None:
            await self.kube.patch_status(meta["namespace"], meta["name"], patch)
            record.status_json = compact_json(new_json)
        routine = result.trigger == renewal.RENEWAL_DUE
        for event in transition_events(old, new, issued=delivered, routine=routine, renewal_note=note):
            await self.post_event(body, event)
        if self.metrics is not None:
            self.metrics.resource_observed(
                meta["namespace"],
                meta["name"],
                ready=not_ready is None,
                failed_attempts=new.failed_attempts,
                expires_at=new.expires_at,
                renewal_at=new.renewal_time,
            )
        return wake_at

    async def _restart_workloads(
        self, body: Mapping[str, Any], targets: list[models.RolloutRestartTarget], now: datetime
    ) -> models.RolloutRestartStatus:
        """A new token replaced another: restart the workloads that read it only at start-up."""
        meta = body["metadata"]
        outcome = await restart_workloads(self.kube, meta["namespace"], targets, now)
        log = logger_for(Owner("", "", meta["name"], meta["namespace"], ""))
        if outcome.restarted:
            message = "restarted " + ", ".join(outcome.restarted) + " for the new token"
            log.info("%s.", message.capitalize())
            await self.post_event(body, Event("Normal", "RolloutRestarted", message))
        if outcome.failed:
            message = "could not restart " + "; ".join(outcome.failed)
            log.warning("%s.", message.capitalize())
            await self.post_event(body, Event("Warning", "RolloutRestartFailed", message))
        return models.RolloutRestartStatus(
            time=now.replace(microsecond=0), restarted=list(outcome.restarted), failed=list(outcome.failed)
        )


def _delivered(result: _Round, old: ClientCredentialStatus) -> bool:
    """A new token reached the Secret (just minted, or kept in memory while its write was refused):
    what ends a failure record and is worth an event. A restored Secret is not news."""
    if not result.synced or result.token is None:
        return False
    return result.issued or (result.token != result.held and not same_token(old, result.token))


def _next_wake(result: _Round, inp: renewal.Input, now: datetime) -> tuple[datetime | None, datetime | None]:
    """When to run the next round, and when a retry is planned (for status), from the same policy
    that decided this round: a round that did nothing can never ask to run again at once."""
    token = inp.token
    if result.suspended:
        ready = token is not None and renewal.readiness(inp) is None
        return (token.expires_at if token is not None and ready else None), None
    decision = renewal.plan(inp)
    if decision.issue is not None:
        wake_at: datetime | None = now + renewal.MIN_RETRY_DELAY  # e.g. a lifetime shorter than a round
        retry_at = None
    else:
        wake_at, retry_at = decision.wake_at, decision.backing_off_until
    if result.write_failed and inp.failure is not None:
        # The token to write is in memory: retry the write on the backoff, not at renewal.
        retry_at = renewal.next_attempt(inp.failure, token.expires_at if token else None, inp.seed)
        wake_at = min(wake_at, retry_at) if wake_at else retry_at
    return wake_at, retry_at


def compact_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def logger_for(owner: Owner) -> logging.LoggerAdapter[logging.Logger]:
    """A logger whose every line names the resource (``resource`` field; text logs prefix it)."""
    return logging.LoggerAdapter(logging.getLogger("tokensync.reconciler"), {"resource": owner.ref})


def current_token(remembered: StoredToken | None, stored: StoredToken | None) -> StoredToken | None:
    """The token the Secret should hold: the newer of what we remember and what the Secret holds.

    Memory restores a deleted or tampered Secret without an exchange; a newer token in the
    Secret (written by another replica after a peering hand-over) wins over an older memory.
    """
    if remembered is None or (stored is not None and stored.issued_at > remembered.issued_at):
        return stored
    return remembered


def _state(token: StoredToken | None) -> renewal.TokenState | None:
    if token is None:
        return None
    return renewal.TokenState(token.issued_at, token.expires_at, token.fingerprint)


def seconds_until(moment: datetime | None, now: datetime) -> float | None:
    if moment is None:
        return None
    return max((moment - now) / timedelta(seconds=1), 0.0)
