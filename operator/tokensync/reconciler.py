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
from .issuer import Issuer, IssueRequest
from .kubeapi import KubeClient, KubeError
from .metrics import Metrics
from .models import PRECONDITION_REASONS, ClientCredentialSpec, ClientCredentialStatus, Reason, validation_summary
from .references import Loaded
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
    render_secret,
)
from .status import Event, Failure, Situation, build_status, failure_record, status_patch, to_json, transition_events

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
    """What the operator remembers about one resource between rounds (lost on restart, by design)."""

    uid: str = ""
    #: The status as last written (or read at start), as compact JSON: a few hundred bytes per
    #: resource instead of a few KiB of dicts (it is parsed once per round).
    status_json: str | None = None
    #: The last token issued for it: restores a deleted or tampered Secret without an exchange.
    token: StoredToken | None = None
    #: The fingerprint of the inputs of the last failed exchange.
    failed_fingerprint: str | None = None
    #: The exact time of the last failure (status keeps whole seconds only).
    failure_at: datetime | None = None
    #: A requested refresh failed: it is retried (with backoff) until an exchange succeeds.
    refresh_pending: bool = False
    #: The resourceVersion of the Secret as we last wrote or read it: our own write's watch event is no news.
    secret_version: str | None = None
    #: (generation, refresh annotation) of the last round: other changes (our status writes) are no news.
    seen: tuple[Any, Any] = (None, None)


@dataclass
class _Round:
    token: StoredToken | None = None
    failure: Failure | None = None
    issued: bool = False
    #: Why the token was issued (a renewal.Verdict reason); "RenewalDue" is routine.
    trigger: str = ""
    suspended: bool = False
    fingerprint: str | None = None
    renewal: models.Renewal = field(default_factory=models.Renewal)
    secret_name: str = ""
    refresh_handled: bool = False


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


class Reconciler:
    def __init__(
        self,
        kube: KubeClient,
        issuer: Issuer,
        *,
        clock: Clock,
        post_event: EventSink,
        metrics: Metrics | None = None,
    ) -> None:
        self.kube = kube
        self.issuer = issuer
        self.clock = clock
        self.post_event = post_event
        self.metrics = metrics

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

    def _ca_bundle_missing(self, sources: Sources, namespace: str, spec: ClientCredentialSpec) -> Failure | None:
        """The CA bundle object must exist (its data is read only when a token is issued)."""
        ref = spec.ca_bundle_ref
        if ref is None:
            return None
        version = (
            sources.secret_version((namespace, ref.name))
            if ref.kind is models.CABundleKind.SECRET
            else sources.configmap_version((namespace, ref.name))
        )
        if version is None:
            return Failure(Reason.INVALID_SPEC, f"caBundleRef: {ref.kind} {ref.name!r} not found")
        return None

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
        failure = self._ca_bundle_missing(sources, namespace, spec)
        if failure is not None:
            return None, failure
        annotations = ((target or {}).get("metadata") or {}).get("annotations") or {}
        stored_fingerprint = annotations.get(ANNOTATION_CREDENTIALS_HASH)
        if (
            token is not None
            and token.fingerprint == stored_fingerprint
            and annotations.get(ANNOTATION_INPUTS_VERSION) == current
        ):
            return _Inputs(url, token.fingerprint, current, None), None
        credentials, failure = self._credentials(namespace, spec, sources.secret_data(key))
        if credentials is None:
            return None, failure
        return _Inputs(url, fingerprint(spec, url, credentials), current, credentials), None

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

        result = _Round(renewal=spec.renewal, secret_name=spec.target_name(name), suspended=spec.suspend)
        target = sources.target((namespace, result.secret_name))
        record.secret_version = ((target or {}).get("metadata") or {}).get("resourceVersion")
        if ownership(target, owner) is Ownership.FOREIGN:
            result.failure = Failure(
                Reason.SECRET_CONFLICT,
                f"Secret {result.secret_name!r} exists and is not managed by this ClientCredential; "
                "tokensync leaves it untouched",
            )
            return result
        result.token = record.token = current_token(record.token, read_token(target))

        inputs, result.failure = self._inputs(sources, namespace, spec, target, result.token)
        if inputs is None:
            return result
        result.fingerprint = inputs.fingerprint
        if not spec.suspend:
            annotation = (meta.get("annotations") or {}).get(REFRESH_ANNOTATION)
            refresh_requested = bool(annotation) and annotation != old.last_refresh_request
            await self._issue_if_due(result, record, old, spec, inputs, refresh_requested, owner, sources, now)
            if result.token is not None:
                matches = result.token.fingerprint == inputs.fingerprint
                await self._write_secret(
                    result, record, owner, spec, target, inputs.version if matches else None, sources
                )
        return result

    async def _issue_if_due(
        self,
        result: _Round,
        record: Record,
        old: ClientCredentialStatus,
        spec: ClientCredentialSpec,
        inputs: _Inputs,
        refresh_requested: bool,
        owner: Owner,
        sources: Sources,
        now: datetime,
    ) -> None:
        """Ask the policy; if a token is due, get one (shared or new) and fold the outcome into ``result``."""
        failure = failure_record(old, record.failure_at)
        inputs_changed = record.failed_fingerprint is not None and record.failed_fingerprint != inputs.fingerprint
        decision = renewal.plan(
            renewal.Input(
                now=now,
                token=_state(result.token),
                fingerprint=inputs.fingerprint,
                renewal=spec.renewal,
                seed=owner.uid,
                failure=failure,
                inputs_changed_since_failure=failure is not None
                and (failure.reason in PRECONDITION_REASONS or inputs_changed),
                refresh_requested=refresh_requested,
                refresh_pending=record.refresh_pending,
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
        request = IssueRequest(spec, inputs.url, credentials, ca_pem, fingerprint(spec, inputs.url, credentials))
        result.refresh_handled = refresh_requested
        result.trigger = decision.issue.reason
        logger_for(owner).info("Issuing a token: %s.", decision.issue.message)
        current = result.token

        def acceptable(shared: StoredToken) -> bool:
            # Another resource's fresh token for the same inputs, not yet due for renewal.
            due = renewal.renewal_time(shared.issued_at, shared.expires_at, spec.renewal, owner.uid)
            return not refresh_requested and shared != current and now < due

        try:
            token = await self.issuer.issue(request, accept=acceptable)
        except ExchangeError as exc:
            result.failure = Failure(exc.reason, exc.message, exc.http_status, exc.code, exc.retry_after)
            record.failed_fingerprint = request.fingerprint
            record.refresh_pending = record.refresh_pending or refresh_requested
            logger_for(owner).warning("Token exchange failed (%s): %s", exc.reason, exc.message)
        except InvalidCABundleError as exc:
            result.failure = Failure(Reason.INVALID_SPEC, f"caBundleRef: {exc}")
        else:
            result.issued = True
            result.token = record.token = token
            record.failed_fingerprint = None
            record.refresh_pending = False

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
        """Make the target Secret hold ``result.token`` (a no-op when it already does)."""
        assert result.token is not None
        try:
            applied = await apply_secret(self.kube, owner, render_secret(owner, spec, result.token, inputs), target)
        except SecretConflictError as exc:
            result.failure, result.token = Failure(Reason.SECRET_CONFLICT, str(exc)), None
        except KubeError as exc:
            if exc.status not in (400, 422):
                raise  # transient or RBAC: logged and retried by the caller
            # The API server refused the Secret we rendered (e.g. a template key the CRD's
            # CEL rules would have rejected): a spec problem the user must fix.
            result.failure = Failure(
                Reason.INVALID_SPEC, f"the API server rejected Secret {result.secret_name!r}: {exc}"
            )
        else:
            record.secret_version = applied.secret["metadata"].get("resourceVersion")
            if applied.written:
                sources.remember_secret(applied.secret)
                if self.metrics is not None:
                    self.metrics.secret_written(owner.namespace)
                if not result.issued:
                    logger_for(owner).info("Restored Secret %s from the current token.", result.secret_name)

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

        uid = meta.get("uid", "")
        token_state = _state(result.token)
        if result.failure is not None:
            record.failure_at = now
            new_record: renewal.FailureRecord | None = renewal.FailureRecord(
                old.failed_attempts + 1, now, result.failure.reason, result.failure.retry_after
            )
        elif result.issued:
            new_record = None
        else:
            new_record = failure_record(old, record.failure_at)
        inp = renewal.Input(
            now=now,
            token=token_state,
            # Unknown inputs (a precondition failed) never match: the token is not ready.
            fingerprint=result.fingerprint or "\x00unknown",
            renewal=result.renewal,
            seed=uid,
            failure=new_record,
            refresh_pending=record.refresh_pending,
        )
        not_ready = renewal.readiness(inp)
        retry_at: datetime | None = None
        if result.suspended:
            wake_at = token_state.expires_at if token_state and not_ready is None else None
        else:
            # The same policy that decided this round decides the next wake-up, so a round
            # that did nothing can never ask to run again at once.
            decision = renewal.plan(inp)
            if decision.issue is not None:
                wake_at = now + renewal.MIN_RETRY_DELAY  # e.g. a lifetime shorter than a round
            else:
                wake_at, retry_at = decision.wake_at, decision.backing_off_until
        renewal_at = (
            renewal.renewal_time(token_state.issued_at, token_state.expires_at, result.renewal, uid)
            if token_state
            else None
        )
        annotation = (meta.get("annotations") or {}).get(REFRESH_ANNOTATION)
        situation = Situation(
            now=now,
            generation=meta.get("generation"),
            secret_name=result.secret_name,
            token=result.token,
            not_ready=not_ready,
            renewal_time=renewal_at,
            failure=result.failure,
            issued=result.issued,
            retry_at=retry_at,
            suspended=result.suspended,
            last_refresh_request=annotation if result.refresh_handled else old.last_refresh_request,
        )
        new = build_status(old, situation)
        new_json = to_json(new)
        patch = status_patch(written, new_json)
        if patch is not None:
            await self.kube.patch_status(meta["namespace"], meta["name"], patch)
            record.status_json = compact_json(new_json)
        routine = result.trigger == renewal.RENEWAL_DUE
        for event in transition_events(old, new, issued=result.issued, routine=routine):
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
