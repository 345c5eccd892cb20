"""The target Secret: pure rendering and reading, and the one function that writes it.

``render_secret()`` builds the desired Secret from a token; ``read_token()`` gets
a token back from a Secret tokensync wrote; ``secret_patch()`` computes the
smallest merge patch that turns the live Secret into the desired one (keeping
labels and annotations that other tools added). ``apply_secret()`` is the only
code path that writes a target Secret: it creates, or patches with the
resourceVersion it read as a precondition, so a concurrent change is never
overwritten blindly.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import json
import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from . import models
from .core import StoredToken, parse_rfc3339, rfc3339
from .exchange import ClientCredentials
from .kubeapi import KubeError

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "tokensync"
ANNOTATION_OWNER = "tokensync.io/owner"
ANNOTATION_ISSUED_AT = "tokensync.io/issued-at"
ANNOTATION_EXPIRES_AT = "tokensync.io/expires-at"
ANNOTATION_CREDENTIALS_HASH = "tokensync.io/credentials-hash"
#: Where the token's lifetime came from (models.LifetimeSource): status reports it after a restart too.
ANNOTATION_LIFETIME_SOURCE = "tokensync.io/lifetime-source"
#: Which spec and which credentials Secret version the token was minted from (``inputs_version()``):
#: after a restart the operator compares it with the cached versions instead of reading every
#: credentials Secret again.
ANNOTATION_INPUTS_VERSION = "tokensync.io/inputs-version"
#: The keys of target.labels and target.annotations that tokensync set, as compact JSON: a key
#: dropped from the spec is removed from the Secret, a key another tool added is left alone.
ANNOTATION_MANAGED_METADATA = "tokensync.io/managed-metadata"
#: Every annotation tokensync sets on its own account (removed when a Secret is released).
OWN_ANNOTATIONS = (
    ANNOTATION_OWNER,
    ANNOTATION_ISSUED_AT,
    ANNOTATION_EXPIRES_AT,
    ANNOTATION_CREDENTIALS_HASH,
    ANNOTATION_LIFETIME_SOURCE,
    ANNOTATION_INPUTS_VERSION,
    ANNOTATION_MANAGED_METADATA,
)

#: A generated Secret is not in Git: GitOps tools must neither prune it nor report it as drift,
#: even when target.labels carry their tracking label. Users may override these.
GITOPS_ANNOTATIONS = {
    "argocd.argoproj.io/compare-options": "IgnoreExtraneous",
    "argocd.argoproj.io/sync-options": "Prune=false",
    "kustomize.toolkit.fluxcd.io/prune": "disabled",
}

KEY_ACCESS_TOKEN, KEY_TOKEN_TYPE, KEY_EXPIRES_AT, KEY_SCOPE = models.TOKEN_KEYS
RESERVED_KEYS = frozenset(models.TOKEN_KEYS)


@dataclass(frozen=True)
class Owner:
    """The ClientCredential a Secret belongs to."""

    api_version: str
    kind: str
    name: str
    namespace: str
    uid: str

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"


def _canonical(spec: models.ClientCredentialSpec, token_url: str, **extra: str) -> bytes:
    """The request parameters of the spec (plus ``extra``) as canonical JSON: what both hashes read."""
    material = {
        "provider": spec.provider.value,
        "url": token_url,
        "scopes": spec.scopes,
        "audience": spec.audience,
        "auth": spec.client_authentication.value,
        "extra": spec.extra_params,
        **extra,
    }
    return json.dumps(material, sort_keys=True, separators=(",", ":")).encode()


def fingerprint(spec: models.ClientCredentialSpec, token_url: str, credentials: ClientCredentials, key: bytes) -> str:
    """A keyed hash of everything that determines which token the endpoint mints.

    Stored in an annotation of a Secret that workloads read, to tell after a restart whether
    the Secret's token still matches the spec and credentials. HMAC-SHA-256 with a key only the
    operator holds (``hashkey.py``): a reader cannot test guesses of a weak client secret offline.
    """
    canonical = _canonical(spec, token_url, clientId=credentials.client_id, clientSecret=credentials.client_secret)
    return hmac.new(key, canonical, hashlib.sha256).hexdigest()[:32]


def inputs_version(spec: models.ClientCredentialSpec, token_url: str, credentials_version: str) -> str:
    """The inputs of ``fingerprint()`` named without their content: the request parameters of the
    spec, and the resourceVersion of the credentials Secret (a new version for every change).

    Equal versions mean equal fingerprints, so a restart can trust the Secret's fingerprint
    without reading the credentials (a different version only means: read and compare).
    """
    return f"{hashlib.sha256(_canonical(spec, token_url)).hexdigest()[:16]}.{credentials_version}"


def _b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


def _unb64(value: str) -> str:
    return base64.b64decode(value, validate=True).decode()


def render_template(template: Mapping[str, str], token: StoredToken) -> dict[str, str]:
    """Render ``target.template``: ``${name}`` placeholders only, no code, unknown names left as is."""
    values = {
        KEY_ACCESS_TOKEN: token.access_token,
        KEY_TOKEN_TYPE: token.token_type,
        KEY_EXPIRES_AT: rfc3339(token.expires_at),
        KEY_SCOPE: token.scope,
    }
    return {
        key: string.Template(text).safe_substitute(values) for key, text in template.items() if key not in RESERVED_KEYS
    }


def render_data(spec: models.ClientCredentialSpec, token: StoredToken) -> dict[str, str]:
    """The Secret's ``data`` (base64 values)."""
    plain = {
        **render_template(spec.target.template, token),
        KEY_ACCESS_TOKEN: token.access_token,
        KEY_TOKEN_TYPE: token.token_type,
        KEY_EXPIRES_AT: rfc3339(token.expires_at),
        KEY_SCOPE: token.scope,
    }
    return {key: _b64(value) for key, value in sorted(plain.items())}


def owner_reference(owner: Owner) -> dict[str, Any]:
    return {
        "apiVersion": owner.api_version,
        "kind": owner.kind,
        "name": owner.name,
        "uid": owner.uid,
        "controller": True,
        # Foreground deletion of the ClientCredential waits for the Secret to go first.
        "blockOwnerDeletion": True,
    }


def render_secret(
    owner: Owner, spec: models.ClientCredentialSpec, token: StoredToken, inputs: str | None = None
) -> dict[str, Any]:
    """The desired target Secret, as a plain dict.

    ``inputs`` is the ``inputs_version()`` the token matches; None keeps the Secret's own (the
    token is an older one, kept while a refresh fails).
    """
    labels = {**spec.target.labels, MANAGED_BY_LABEL: MANAGED_BY_VALUE}
    requested = {**GITOPS_ANNOTATIONS, **spec.target.annotations}
    annotations = {
        **requested,
        ANNOTATION_OWNER: owner.ref,
        ANNOTATION_ISSUED_AT: rfc3339(token.issued_at),
        ANNOTATION_EXPIRES_AT: rfc3339(token.expires_at),
        ANNOTATION_CREDENTIALS_HASH: token.fingerprint,
        ANNOTATION_LIFETIME_SOURCE: token.lifetime_source,
        ANNOTATION_MANAGED_METADATA: managed_metadata(labels, requested),
    }
    if inputs is not None:
        annotations[ANNOTATION_INPUTS_VERSION] = inputs
    metadata: dict[str, Any] = {
        "name": spec.target_name(owner.name),
        "namespace": owner.namespace,
        "labels": labels,
        "annotations": annotations,
    }
    if spec.target.deletion_policy is models.DeletionPolicy.DELETE:
        metadata["ownerReferences"] = [owner_reference(owner)]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": metadata,
        "data": render_data(spec, token),
    }


class Ownership(enum.Enum):
    ABSENT = "absent"
    OURS = "ours"
    #: Not created by tokensync, or created for another ClientCredential.
    FOREIGN = "foreign"


def ownership(secret: Mapping[str, Any] | None, owner: Owner) -> Ownership:
    """Ours: the owner annotation names this resource, or our controller reference carries its uid.

    The managed-by label alone proves nothing (anyone can set it), so it never makes a Secret ours;
    a controller reference to anything else, or an owner annotation naming another resource,
    makes it foreign whatever else it says.
    """
    if secret is None:
        return Ownership.ABSENT
    meta = secret.get("metadata") or {}
    named = (meta.get("annotations") or {}).get(ANNOTATION_OWNER)
    controllers = [ref.get("uid") for ref in meta.get("ownerReferences") or [] if ref.get("controller")]
    if named not in (None, owner.ref) or any(uid != owner.uid for uid in controllers):
        return Ownership.FOREIGN
    if named == owner.ref or (owner.uid and owner.uid in controllers):
        return Ownership.OURS
    return Ownership.FOREIGN


def managed_metadata(labels: Mapping[str, str], annotations: Mapping[str, str]) -> str:
    """The ANNOTATION_MANAGED_METADATA value for the labels and annotations tokensync sets."""
    owned = {"labels": sorted(k for k in labels if k != MANAGED_BY_LABEL), "annotations": sorted(annotations)}
    return json.dumps(owned, separators=(",", ":"))


def _previously_managed(meta: Mapping[str, Any]) -> dict[str, set[str]]:
    """What the live Secret's ANNOTATION_MANAGED_METADATA says tokensync set (empty if damaged)."""
    raw = (meta.get("annotations") or {}).get(ANNOTATION_MANAGED_METADATA)
    try:
        parsed = json.loads(raw) if raw else {}
    except ValueError:
        parsed = {}
    if not isinstance(parsed, dict):
        parsed = {}
    return {field: {k for k in parsed.get(field) or [] if isinstance(k, str)} for field in ("labels", "annotations")}


def release_patch(actual: Mapping[str, Any], owner: Owner) -> dict[str, Any]:
    """The merge patch that hands a Secret over to its users: no owner reference, no managed-by
    label, none of tokensync's annotations (so it is not adopted again); its data stays."""
    meta = actual.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    refs = [r for r in meta.get("ownerReferences") or [] if r.get("uid") != owner.uid]
    return {
        "metadata": {
            "resourceVersion": meta.get("resourceVersion"),
            "labels": {MANAGED_BY_LABEL: None},
            "annotations": {k: None for k in OWN_ANNOTATIONS if k in annotations},
            "ownerReferences": refs or None,
        }
    }


def _lifetime_source(value: str | None) -> str:
    known = {source.value for source in models.LifetimeSource}
    return value if value in known else models.LifetimeSource.EXPIRES_IN.value


def read_token(secret: Mapping[str, Any] | None) -> StoredToken | None:
    """The token a tokensync Secret holds, or ``None`` if it is missing or damaged."""
    if secret is None:
        return None
    meta = secret.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    data = secret.get("data") or {}
    try:
        return StoredToken(
            access_token=_unb64(data[KEY_ACCESS_TOKEN]),
            token_type=_unb64(data[KEY_TOKEN_TYPE]),
            scope=_unb64(data.get(KEY_SCOPE, "")),
            issued_at=parse_rfc3339(annotations[ANNOTATION_ISSUED_AT]),
            expires_at=parse_rfc3339(_unb64(data[KEY_EXPIRES_AT])),
            fingerprint=annotations[ANNOTATION_CREDENTIALS_HASH],
            lifetime_source=_lifetime_source(annotations.get(ANNOTATION_LIFETIME_SOURCE)),
        )
    except (KeyError, ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        return None


def _map_patch(actual: Mapping[str, Any], desired: Mapping[str, Any], *, exact: bool) -> dict[str, Any]:
    """Merge-patch entries for one map; with ``exact``, keys not desired are removed."""
    patch: dict[str, Any] = {k: v for k, v in desired.items() if actual.get(k) != v}
    if exact:
        patch.update({k: None for k in actual if k not in desired})
    return patch


def secret_patch(actual: Mapping[str, Any], desired: Mapping[str, Any], owner: Owner) -> dict[str, Any] | None:
    """The merge patch from ``actual`` to ``desired``, or ``None`` when nothing differs.

    ``data`` is owned by tokensync and made exact; of the labels and annotations, only those
    tokensync set (ANNOTATION_MANAGED_METADATA) are removed when the spec drops them, so tools
    that annotate Secrets (GitOps trackers, reflectors) keep theirs.
    """
    a_meta, d_meta = actual.get("metadata") or {}, desired["metadata"]
    patch: dict[str, Any] = {}
    meta_patch: dict[str, Any] = {}
    previously = _previously_managed(a_meta)
    for field in ("labels", "annotations"):
        live, wanted = a_meta.get(field) or {}, d_meta.get(field) or {}
        entries = _map_patch(live, wanted, exact=False)
        # Keys tokensync set before and the spec no longer asks for; other tools' keys stay.
        entries.update({k: None for k in previously[field] if k in live and k not in wanted})
        if entries:
            meta_patch[field] = entries
    others = [r for r in a_meta.get("ownerReferences") or [] if r.get("uid") != owner.uid]
    wanted = others + list(d_meta.get("ownerReferences") or [])
    if wanted != list(a_meta.get("ownerReferences") or []):
        meta_patch["ownerReferences"] = wanted  # merge patch replaces lists whole
    data = _map_patch(actual.get("data") or {}, desired["data"], exact=True)
    if data:
        patch["data"] = data
    if meta_patch:
        patch["metadata"] = meta_patch
    if not patch:
        return None
    # A precondition: the API server answers 409 if the Secret changed since we read it.
    patch.setdefault("metadata", {})["resourceVersion"] = a_meta.get("resourceVersion")
    return patch


class SecretApi(Protocol):
    """The three calls ``apply_secret()`` makes (``kubeapi.KubeClient`` has them)."""

    async def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def create_secret(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]: ...

    async def patch_secret(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]: ...


class SecretConflictError(Exception):
    """The target name is taken by a Secret tokensync does not own; it is left untouched."""


@dataclass(frozen=True)
class Applied:
    secret: dict[str, Any]
    #: Whether a write was made (False when the live Secret already matched).
    written: bool


async def apply_secret(
    kube: SecretApi, owner: Owner, desired: dict[str, Any], actual: dict[str, Any] | None, *, attempts: int = 3
) -> Applied:
    """Make the live Secret match ``desired``: the only writer of target Secrets.

    ``actual`` is the Secret as last read. Creation and patches carry preconditions
    (AlreadyExists, resourceVersion); on a 409 the Secret is read again and the
    decision remade, so a foreign Secret created in between is never overwritten.
    """
    namespace, name = desired["metadata"]["namespace"], desired["metadata"]["name"]
    for attempt in range(attempts):
        if attempt:
            actual = await kube.get_secret(namespace, name)
        state = ownership(actual, owner)
        if state is Ownership.FOREIGN:
            raise SecretConflictError(
                f"Secret {name!r} exists and is not managed by this ClientCredential; "
                "tokensync leaves it untouched: delete it or choose another target.name"
            )
        try:
            if actual is None:
                return Applied(await kube.create_secret(namespace, desired), written=True)
            patch = secret_patch(actual, desired, owner)
            if patch is None:
                return Applied(actual, written=False)
            return Applied(await kube.patch_secret(namespace, name, patch), written=True)
        except KubeError as exc:
            if not (exc.conflict or (exc.not_found and actual is not None)):
                raise
    raise KubeError(409, "Conflict", f"Secret {name!r} kept changing during {attempts} attempts to update it")
