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
#: Which spec and which credentials Secret version the token was minted from (``inputs_version()``):
#: after a restart the operator compares it with the cached versions instead of reading every
#: credentials Secret again.
ANNOTATION_INPUTS_VERSION = "tokensync.io/inputs-version"

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


def fingerprint(spec: models.ClientCredentialSpec, token_url: str, credentials: ClientCredentials) -> str:
    """A hash of everything that determines which token the endpoint mints.

    Stored in an annotation to tell, after a restart, whether the Secret's token still
    matches the spec and credentials. SHA-256 over the inputs: the secret itself is
    never stored, and a client secret is a high-entropy value that a hash does not reveal.
    """
    material = {
        "provider": spec.provider.value,
        "url": token_url,
        "clientId": credentials.client_id,
        "clientSecret": credentials.client_secret,
        "scopes": spec.scopes,
        "audience": spec.audience,
        "auth": spec.client_authentication.value,
        "extra": spec.extra_params,
    }
    canonical = json.dumps(material, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def inputs_version(spec: models.ClientCredentialSpec, token_url: str, credentials_version: str) -> str:
    """The inputs of ``fingerprint()`` named without their content: the request parameters of the
    spec, and the resourceVersion of the credentials Secret (a new version for every change).

    Equal versions mean equal fingerprints, so a restart can trust the Secret's fingerprint
    without reading the credentials (a different version only means: read and compare).
    """
    material = {
        "provider": spec.provider.value,
        "url": token_url,
        "scopes": spec.scopes,
        "audience": spec.audience,
        "auth": spec.client_authentication.value,
        "extra": spec.extra_params,
    }
    canonical = json.dumps(material, sort_keys=True, separators=(",", ":"))
    return f"{hashlib.sha256(canonical.encode()).hexdigest()[:16]}.{credentials_version}"


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
    annotations = {
        **GITOPS_ANNOTATIONS,
        **spec.target.annotations,
        ANNOTATION_OWNER: owner.ref,
        ANNOTATION_ISSUED_AT: rfc3339(token.issued_at),
        ANNOTATION_EXPIRES_AT: rfc3339(token.expires_at),
        ANNOTATION_CREDENTIALS_HASH: token.fingerprint,
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
    if secret is None:
        return Ownership.ABSENT
    meta = secret.get("metadata") or {}
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    if labels.get(MANAGED_BY_LABEL) != MANAGED_BY_VALUE:
        return Ownership.FOREIGN
    if annotations.get(ANNOTATION_OWNER) not in (None, owner.ref):
        return Ownership.FOREIGN
    for ref in meta.get("ownerReferences") or []:
        if ref.get("controller") and ref.get("uid") != owner.uid:
            return Ownership.FOREIGN
    return Ownership.OURS


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

    ``data`` is owned by tokensync and made exact; labels and annotations are only
    added to, so tools that annotate Secrets (GitOps trackers, reflectors) keep theirs.
    """
    a_meta, d_meta = actual.get("metadata") or {}, desired["metadata"]
    patch: dict[str, Any] = {}
    meta_patch: dict[str, Any] = {}
    for field in ("labels", "annotations"):
        entries = _map_patch(a_meta.get(field) or {}, d_meta.get(field) or {}, exact=False)
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
