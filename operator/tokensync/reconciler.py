"""One reconciliation round for one ClientCredential: gather, decide, act, report.

- *gather*: parse the spec, read the credentials Secret, the CA bundle and the
  target Secret (all in the resource's own namespace);
- *decide*: ``renewal.plan()`` says whether to issue a token now or when to look again;
- *act*: exchange through the ``Issuer`` and write the Secret with ``apply_secret()``;
- *report*: build the status (``status.py``), patch only what changed, post
  events on transitions.

The round never raises for an expected failure: it is folded into status. It
returns when the next round should run.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from . import models, renewal
from .core import Clock, StoredToken
from .exchange import ClientCredentials, ExchangeError, InvalidCABundleError, host_allowed
from .issuer import Issuer, IssueRequest
from .kube import Kube, KubeError
from .metrics import Metrics
from .models import PRECONDITION_REASONS, ClientCredentialSpec, ClientCredentialStatus, Reason, validation_summary
from .secrets import (
    Owner,
    Ownership,
    SecretConflictError,
    apply_secret,
    fingerprint,
    ownership,
    read_token,
    render_secret,
)
from .status import Event, Failure, Situation, build_status, failure_record, status_patch, to_json, transition_events

REFRESH_ANNOTATION = "tokensync.io/refresh-requested-at"


EventSink = Callable[[Mapping[str, Any], Event], None]


@dataclass
class ResourceState:
    """What the operator remembers about one resource between rounds (lost on restart, by design)."""

    #: The status as last written (or read at start), in API form.
    status: dict[str, Any] | None = None
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
    #: Secrets this resource reads or writes, for waking it when they change.
    watched_secrets: frozenset[str] = frozenset()
    wake: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class _Round:
    token: StoredToken | None = None
    failure: Failure | None = None
    issued: bool = False
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


class Reconciler:
    def __init__(
        self,
        kube: Kube,
        issuer: Issuer,
        *,
        clock: Clock,
        post_event: EventSink,
        metrics: Metrics | None = None,
        logger: logging.Logger | logging.LoggerAdapter[Any] | None = None,
    ) -> None:
        self.kube = kube
        self.issuer = issuer
        self.clock = clock
        self.post_event = post_event
        self.metrics = metrics
        self.logger: logging.Logger | logging.LoggerAdapter[Any] = logger or logging.getLogger("tokensync")

    # gather ----------------------------------------------------------------------------------

    async def _credentials(
        self, namespace: str, spec: ClientCredentialSpec
    ) -> tuple[ClientCredentials | None, Failure | None]:
        ref = spec.credentials_ref
        secret = await self.kube.get_secret(namespace, ref.name)
        if secret is None:
            return None, Failure(Reason.CREDENTIALS_NOT_FOUND, f"Secret {ref.name!r} not found in {namespace!r}")
        data = secret.get("data") or {}
        values: dict[str, str] = {}
        for key in (ref.client_id_key, ref.client_secret_key):
            value = _decode(data, key)
            if not value:
                return None, Failure(Reason.CREDENTIALS_NOT_FOUND, f"Secret {ref.name!r} has no non-empty key {key!r}")
            values[key] = value
        return ClientCredentials(values[ref.client_id_key], values[ref.client_secret_key]), None

    async def _ca_bundle(self, namespace: str, spec: ClientCredentialSpec) -> tuple[str | None, Failure | None]:
        ref = spec.ca_bundle_ref
        if ref is None:
            return None, None
        if ref.kind is models.CABundleKind.SECRET:
            obj = await self.kube.get_secret(namespace, ref.name)
            pem = _decode(obj.get("data") or {}, ref.key) if obj else None
        else:
            obj = await self.kube.get_configmap(namespace, ref.name)
            pem = (obj.get("data") or {}).get(ref.key) if obj else None
        if not pem:
            return None, Failure(Reason.INVALID_SPEC, f"caBundleRef: {ref.kind} {ref.name!r} has no key {ref.key!r}")
        return pem, None

    # one round -------------------------------------------------------------------------------

    async def _round(
        self, body: Mapping[str, Any], state: ResourceState, old: ClientCredentialStatus, now: datetime
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
        target = await self.kube.get_secret(namespace, result.secret_name)
        state.secret_version = ((target or {}).get("metadata") or {}).get("resourceVersion")
        ca_secret = spec.ca_bundle_ref.name if spec.ca_bundle_ref and spec.ca_bundle_ref.kind == "Secret" else None
        state.watched_secrets = frozenset(n for n in (result.secret_name, spec.credentials_ref.name, ca_secret) if n)
        if ownership(target, owner) is Ownership.FOREIGN:
            result.failure = Failure(
                Reason.SECRET_CONFLICT,
                f"Secret {result.secret_name!r} exists and is not managed by this ClientCredential; "
                "tokensync leaves it untouched",
            )
            return result
        result.token = state.token = current_token(state.token, read_token(target))

        inputs, result.failure = await self._inputs(namespace, spec)
        if inputs is None:
            return result
        result.fingerprint = inputs.fingerprint
        if not spec.suspend:
            annotation = (meta.get("annotations") or {}).get(REFRESH_ANNOTATION)
            refresh_requested = bool(annotation) and annotation != old.last_refresh_request
            await self._issue_if_due(result, state, old, inputs, refresh_requested, uid, now)
            if result.token is not None:
                await self._write_secret(result, state, owner, spec, target)
        return result

    async def _inputs(self, namespace: str, spec: ClientCredentialSpec) -> tuple[IssueRequest | None, Failure | None]:
        """Everything an exchange needs, or the precondition that failed (checked before any request)."""
        url = spec.effective_token_url()
        if url is None:
            return None, Failure(Reason.INVALID_SPEC, "tokenURL is required when provider is oauth2")
        if not host_allowed(url, self.issuer.allowed_hosts):
            return None, Failure(
                Reason.HOST_NOT_ALLOWED,
                f"the token host of {url!r} is not in the operator's allowlist (--allowed-token-host)",
            )
        credentials, failure = await self._credentials(namespace, spec)
        if credentials is None:
            return None, failure
        ca_pem, failure = await self._ca_bundle(namespace, spec)
        if failure is not None:
            return None, failure
        return IssueRequest(spec, url, credentials, ca_pem, fingerprint(spec, url, credentials)), None

    async def _issue_if_due(
        self,
        result: _Round,
        state: ResourceState,
        old: ClientCredentialStatus,
        request: IssueRequest,
        refresh_requested: bool,
        uid: str,
        now: datetime,
    ) -> None:
        """Ask the policy; if a token is due, get one (shared or new) and fold the outcome into ``result``."""
        record = failure_record(old, state.failure_at)
        inputs_changed = state.failed_fingerprint is not None and state.failed_fingerprint != request.fingerprint
        decision = renewal.plan(
            renewal.Input(
                now=now,
                token=_state(result.token),
                fingerprint=request.fingerprint,
                renewal=request.spec.renewal,
                seed=uid,
                failure=record,
                inputs_changed_since_failure=record is not None
                and (record.reason in PRECONDITION_REASONS or inputs_changed),
                refresh_requested=refresh_requested,
                refresh_pending=state.refresh_pending,
            )
        )
        if decision.issue is None:
            return
        result.refresh_handled = refresh_requested
        self.logger.info("Issuing a token: %s.", decision.issue.message)
        current = result.token

        def acceptable(shared: StoredToken) -> bool:
            # Another resource's fresh token for the same inputs, not yet due for renewal.
            due = renewal.renewal_time(shared.issued_at, shared.expires_at, request.spec.renewal, uid)
            return not refresh_requested and shared != current and now < due

        try:
            token = await self.issuer.issue(request, accept=acceptable)
        except ExchangeError as exc:
            result.failure = Failure(exc.reason, exc.message, exc.http_status, exc.code, exc.retry_after)
            state.failed_fingerprint = request.fingerprint
            state.refresh_pending = state.refresh_pending or refresh_requested
            self.logger.warning("Token exchange failed (%s): %s", exc.reason, exc.message)
        except InvalidCABundleError as exc:
            result.failure = Failure(Reason.INVALID_SPEC, f"caBundleRef: {exc}")
        else:
            result.issued = True
            result.token = state.token = token
            state.failed_fingerprint = None
            state.refresh_pending = False

    async def _write_secret(
        self,
        result: _Round,
        state: ResourceState,
        owner: Owner,
        spec: ClientCredentialSpec,
        target: dict[str, Any] | None,
    ) -> None:
        """Make the target Secret hold ``result.token`` (a no-op when it already does)."""
        assert result.token is not None
        try:
            applied = await apply_secret(self.kube, owner, render_secret(owner, spec, result.token), target)
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
            state.secret_version = applied.secret["metadata"].get("resourceVersion")
            if applied.written and self.metrics is not None:
                self.metrics.secret_written(owner.namespace)
            if applied.written and not result.issued:
                self.logger.info("Restored Secret %s from the current token.", result.secret_name)

    # report ----------------------------------------------------------------------------------

    async def reconcile(self, body: Mapping[str, Any], state: ResourceState) -> datetime | None:
        """Run one round and report it. Returns when to run the next one (None: only on change)."""
        now = self.clock()
        meta = body["metadata"]
        if state.status is None:
            state.status = dict(body.get("status") or {})
        try:
            old = ClientCredentialStatus.model_validate(state.status)
        except ValidationError:
            old = ClientCredentialStatus()
        result = await self._round(body, state, old, now)

        uid = meta.get("uid", "")
        token_state = _state(result.token)
        if result.failure is not None:
            state.failure_at = now
            new_record: renewal.FailureRecord | None = renewal.FailureRecord(
                old.failed_attempts + 1, now, result.failure.reason, result.failure.retry_after
            )
        elif result.issued:
            new_record = None
        else:
            new_record = failure_record(old, state.failure_at)
        inp = renewal.Input(
            now=now,
            token=token_state,
            # Unknown inputs (a precondition failed) never match: the token is not ready.
            fingerprint=result.fingerprint or "\x00unknown",
            renewal=result.renewal,
            seed=uid,
            failure=new_record,
            refresh_pending=state.refresh_pending,
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
        patch = status_patch(state.status, new_json)
        if patch is not None:
            await self.kube.patch_status(meta["namespace"], meta["name"], patch)
            state.status = new_json
        for event in transition_events(old, new, issued=result.issued):
            self.post_event(body, event)
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
