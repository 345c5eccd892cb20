"""Pydantic models: the ClientCredential spec and status, token responses, error bodies.

These classes are the one source of the CRD schema (see ``crd.py``): field
descriptions, defaults, enums, ranges and the CEL rules that the API server
enforces at admission all live here, next to the code that reads them.
"""

from __future__ import annotations

import enum
import re
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator
from pydantic.config import JsonDict

GROUP = "tokensync.io"
VERSION = "v1alpha1"
KIND = "ClientCredential"
PLURAL = "clientcredentials"
SINGULAR = "clientcredential"
SHORT_NAMES = ("clientcred", "cc")

PALISADE_TOKEN_URL = "https://api.palisade.co/v2/credentials/oauth/token"
DEFAULT_RENEWAL_PERCENT = 67

# Kubernetes-style durations as in cert-manager's renewBefore: "90s", "10m", "1h30m". Digits are
# bounded so no value overflows (the longest is far past MAX_DURATION, which the model enforces).
DURATION_PATTERN = r"^([0-9]{1,7}(\.[0-9]{1,9})?(h|m|s|ms))+$"
MAX_DURATION = "8760h"
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(h|ms|m|s)")
_DURATION_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}

# A DNS-1123 subdomain: what Kubernetes accepts as an object name.
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# A Secret/ConfigMap data key.
DATA_KEY = r"^[-._a-zA-Z0-9]+$"
# The keys tokensync writes into the target Secret itself.
TOKEN_KEYS = ("accessToken", "tokenType", "expiresAt", "scope")

# Label values and the name part of qualified names (label and annotation keys), as Kubernetes
# validates them (k8s.io/apimachinery/pkg/util/validation).
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
_QUALIFIED_NAME_PART = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS_SUBDOMAIN = re.compile(DNS_SUBDOMAIN)
# https, then a host without whitespace, control characters, userinfo or backslashes, then an
# optional path and query (no fragment: it is never sent).
TOKEN_URL_PATTERN = r"^https://[^\s\x00-\x1f\x7f/?#@\\]+([/?][^\s\x00-\x1f\x7f#]*)?$"

ObjectName = Annotated[str, StringConstraints(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)]
LabelValue = Annotated[str, StringConstraints(max_length=63, pattern=LABEL_VALUE)]
DataKey = Annotated[str, StringConstraints(min_length=1, max_length=253, pattern=DATA_KEY)]
Duration = Annotated[str, StringConstraints(pattern=DURATION_PATTERN, max_length=32)]


def parse_duration(text: str) -> timedelta:
    """Parse a Kubernetes-style duration ("1h30m", "90s", "500ms") into a timedelta."""
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"invalid duration {text!r}: use e.g. 90s, 10m, 1h30m")
    seconds = sum(float(num) * _DURATION_UNITS[unit] for num, unit in _DURATION_PART.findall(text))
    return timedelta(seconds=seconds)


def duration_within(value: str | None, low: str, high: str, message: str) -> str | None:
    """``value`` unchanged when it is None or a duration within [low, high]; else ``message`` as a ValueError."""
    if value is not None and not (parse_duration(low) <= parse_duration(value) <= parse_duration(high)):
        raise ValueError(message)
    return value


def qualified_name_problem(key: str) -> str | None:
    """Why ``key`` is not a valid label or annotation key (Kubernetes' rules), or None."""
    prefix, slash, name = key.rpartition("/")
    if slash and not (0 < len(prefix) <= 253 and _DNS_SUBDOMAIN.match(prefix)):
        return f"{key!r}: the prefix must be a DNS subdomain of at most 253 characters"
    if not (0 < len(name) <= 63 and _QUALIFIED_NAME_PART.match(name)):
        return f"{key!r}: the name must be 1-63 characters, alphanumeric at both ends, with only '-', '_' or '.' inside"
    return None


def token_url_problem(url: str) -> str | None:
    """Why ``url`` is not a usable https token URL, or None (the CRD pattern checks most of it)."""
    if any(not ch.isprintable() or ch.isspace() for ch in url):
        return "tokenURL must not contain whitespace or control characters"
    try:
        parts = urlsplit(url)
        port = parts.port  # raises for a port out of range or not a number
    except ValueError as exc:
        return f"tokenURL is not a valid URL: {exc}"
    if parts.scheme != "https" or not parts.hostname:
        return "tokenURL must be an https URL with a host"
    if parts.username is not None or parts.password is not None:
        return "tokenURL must not contain user information (user:password@)"
    if port == 0:
        return "tokenURL has an invalid port"
    return None


def validation_summary(exc: ValidationError, *, root: tuple[str, ...] = (), limit: int = 4) -> str:
    """``path: message`` for the first ``limit`` errors. Never pydantic's own text: it echoes the
    input values, which may be a token (a response body) or a secret."""
    parts = [f"{'.'.join(str(p) for p in (*root, *err['loc'])) or 'body'}: {err['msg']}" for err in exc.errors()]
    return "; ".join(parts[:limit])


def cel(rule: str, message: str, field_path: str | None = None) -> JsonDict:
    """One ``x-kubernetes-validations`` entry."""
    entry: JsonDict = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    return entry


class _Model(BaseModel):
    # Unknown fields are rejected by the API server's pruning; here we ignore them
    # so an operator older than its CRD keeps working.
    model_config = ConfigDict(populate_by_name=True, extra="ignore", use_enum_values=False)


class Provider(enum.StrEnum):
    PALISADE = "palisade"
    OAUTH2 = "oauth2"


class ClientAuthentication(enum.StrEnum):
    BASIC = "basic"
    POST = "post"


class DeletionPolicy(enum.StrEnum):
    DELETE = "Delete"
    RETAIN = "Retain"


class CABundleKind(enum.StrEnum):
    CONFIGMAP = "ConfigMap"
    SECRET = "Secret"


class WorkloadKind(enum.StrEnum):
    DEPLOYMENT = "Deployment"
    STATEFULSET = "StatefulSet"
    DAEMONSET = "DaemonSet"


class CredentialsRef(_Model):
    """Where the client ID and secret live: a Secret in the resource's own namespace."""

    name: ObjectName = Field(description="Name of a Secret in the same namespace.")
    client_id_key: DataKey = Field(
        default="clientId", alias="clientIdKey", description="Key of the client ID in the Secret."
    )
    client_secret_key: DataKey = Field(
        default="clientSecret", alias="clientSecretKey", description="Key of the client secret in the Secret."
    )


class CABundleRef(_Model):
    """Extra CA certificates to trust for the token endpoint, in addition to the system roots."""

    kind: CABundleKind = Field(default=CABundleKind.CONFIGMAP, description="ConfigMap or Secret.")
    name: ObjectName = Field(description="Name of the ConfigMap or Secret in the same namespace.")
    key: DataKey = Field(default="ca.crt", description="Key holding PEM-encoded certificates.")


class Renewal(_Model):
    """When to refresh: a share of the token's lifetime, or a fixed time before expiry."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!(has(self.percent) && has(self.before))",
                    "renewal.percent and renewal.before are exclusive",
                ),
                cel(
                    "!has(self.percent) || (self.percent >= 1 && self.percent <= 99)",
                    "renewal.percent must be between 1 and 99",
                ),
                cel(
                    f"!has(self.before) || duration(self.before) <= duration('{MAX_DURATION}')",
                    f"renewal.before must be at most {MAX_DURATION}",
                    ".before",
                ),
            ]
        }
    )

    percent: int | None = Field(
        default=None,
        ge=1,
        le=99,
        description=f"Refresh after this percentage of the token's lifetime (default {DEFAULT_RENEWAL_PERCENT}).",
    )
    before: Duration | None = Field(
        default=None,
        description="Refresh this long before expiry (e.g. 10m). If not shorter than the lifetime, "
        f"the default percentage applies. At most {MAX_DURATION}.",
    )

    @field_validator("before")
    @classmethod
    def _bounded(cls, before: str | None) -> str | None:
        return duration_within(before, "0s", MAX_DURATION, f"renewal.before must be at most {MAX_DURATION}")


class Target(_Model):
    """The Secret that workloads mount."""

    name: ObjectName | None = Field(default=None, description="Secret name (default: the resource's name).")
    labels: dict[str, LabelValue] = Field(
        default_factory=dict,
        max_length=64,
        description="Extra labels on the Secret (keys and values valid as Kubernetes labels).",
    )
    annotations: dict[str, Annotated[str, StringConstraints(max_length=65536)]] = Field(
        default_factory=dict,
        max_length=64,
        description="Extra annotations on the Secret (keys valid as Kubernetes annotation keys).",
    )

    @field_validator("labels", "annotations")
    @classmethod
    def _qualified_keys(cls, entries: dict[str, str]) -> dict[str, str]:
        # Keys cannot be checked at admission (see the template rule), so the model says it:
        # InvalidSpec, before the API server would refuse the Secret.
        for key in entries:
            problem = qualified_name_problem(key)
            if problem is not None:
                raise ValueError(f"invalid key {problem}")
        return entries

    template: dict[str, str] = Field(
        default_factory=dict,
        max_length=64,
        description="Extra keys rendered from ${accessToken}, ${tokenType}, ${expiresAt}, ${scope}.",
        json_schema_extra={
            # Key lookups only: a rule that walks the keys (matches(), ==) would be costed by the
            # API server for keys of unbounded length and push the CRD over the CEL cost budget.
            # Key syntax is checked by the model (InvalidSpec) and by the API server on the Secret.
            "x-kubernetes-validations": [
                cel(
                    " && ".join(f"!('{key}' in self)" for key in TOKEN_KEYS),
                    "template keys must not replace accessToken, tokenType, expiresAt or scope",
                ),
            ]
        },
    )

    @field_validator("template")
    @classmethod
    def _template_keys(cls, template: dict[str, str]) -> dict[str, str]:
        # The CRD's CEL rules say the same at admission; this covers API servers that skip them.
        for key in template:
            if not re.fullmatch(DATA_KEY, key) or len(key) > 253:
                raise ValueError(f"template key {key!r} is not a valid Secret data key")
            if key in TOKEN_KEYS:
                raise ValueError(f"template key {key!r} would replace a token key")
        return template

    deletion_policy: DeletionPolicy = Field(
        default=DeletionPolicy.DELETE,
        alias="deletionPolicy",
        description="Delete: the Secret is garbage-collected with the resource. Retain: it is left behind.",
    )


class LifetimeSource(enum.StrEnum):
    """Where a token's lifetime came from (``status.lifetimeSource``)."""

    EXPIRES_IN = "ExpiresIn"
    JWT = "JWT"
    DEFAULT = "Default"


class RolloutRestartTarget(_Model):
    kind: WorkloadKind = Field(description="Deployment, StatefulSet or DaemonSet.")
    name: ObjectName = Field(description="Name of the workload in the same namespace.")


class ClientCredentialSpec(_Model):
    """Exchange client credentials for an access token and keep it fresh in a Secret."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.tokenURL) || self.tokenURL.startsWith('https://')",
                    "tokenURL must use https",
                    ".tokenURL",
                ),
                cel(
                    "!has(self.provider) || self.provider != 'oauth2' || has(self.tokenURL)",
                    "tokenURL is required when provider is oauth2",
                ),
                cel(
                    "!has(self.defaultLifetime) || (has(self.provider) && self.provider == 'oauth2')",
                    "defaultLifetime is only used with provider oauth2 (Palisade always sends expiresIn)",
                    ".defaultLifetime",
                ),
                cel(
                    "!has(self.defaultLifetime) || (duration(self.defaultLifetime) >= duration('10s') && "
                    f"duration(self.defaultLifetime) <= duration('{MAX_DURATION}'))",
                    f"defaultLifetime must be between 10s and {MAX_DURATION}",
                    ".defaultLifetime",
                ),
            ]
        }
    )

    provider: Provider = Field(default=Provider.PALISADE, description="Token endpoint dialect.")
    token_url: Annotated[str, StringConstraints(pattern=TOKEN_URL_PATTERN, max_length=2048)] | None = Field(
        default=None,
        alias="tokenURL",
        description=f"Token endpoint (https only, no user information). Default for palisade: {PALISADE_TOKEN_URL}.",
    )

    @field_validator("token_url")
    @classmethod
    def _usable_url(cls, url: str | None) -> str | None:
        problem = token_url_problem(url) if url is not None else None
        if problem is not None:
            raise ValueError(problem)
        return url

    credentials_ref: CredentialsRef = Field(alias="credentialsRef")
    scopes: list[Annotated[str, StringConstraints(min_length=1, max_length=256)]] = Field(
        default_factory=list, max_length=64, description="oauth2 only: requested scopes."
    )
    audience: Annotated[str, StringConstraints(max_length=2048)] | None = Field(
        default=None, description="oauth2 only: requested audience."
    )
    client_authentication: ClientAuthentication = Field(
        default=ClientAuthentication.BASIC,
        alias="clientAuthentication",
        description="oauth2 only: client_secret_basic (basic) or client_secret_post (post).",
    )
    extra_params: dict[str, str] = Field(
        default_factory=dict,
        max_length=32,
        alias="extraParams",
        description="oauth2 only: extra form parameters.",
    )
    default_lifetime: Duration | None = Field(
        default=None,
        alias="defaultLifetime",
        description="oauth2 only: the lifetime to assume when the server sends no expires_in and the access "
        "token is not a JWT with an exp claim (e.g. 30m). Between 10s and 8760h.",
    )
    ca_bundle_ref: CABundleRef | None = Field(default=None, alias="caBundleRef")
    renewal: Renewal = Field(default_factory=Renewal)
    target: Target = Field(default_factory=Target)
    rollout_restart_targets: list[RolloutRestartTarget] = Field(
        default_factory=list,
        alias="rolloutRestartTargets",
        max_length=32,
        description="Workloads to restart when the token changes.",
    )
    suspend: bool = Field(default=False, description="Stop refreshing; the current token is left in place.")

    @field_validator("default_lifetime")
    @classmethod
    def _lifetime_bounded(cls, value: str | None) -> str | None:
        return duration_within(value, "10s", MAX_DURATION, f"defaultLifetime must be between 10s and {MAX_DURATION}")

    def effective_token_url(self) -> str | None:
        if self.token_url:
            return self.token_url
        return PALISADE_TOKEN_URL if self.provider is Provider.PALISADE else None

    def target_name(self, resource_name: str) -> str:
        return self.target.name or resource_name


class Reason(enum.StrEnum):
    """Why a condition is what it is. Each value is documented in the README."""

    TOKEN_ISSUED = "TokenIssued"
    CREDENTIALS_NOT_FOUND = "CredentialsNotFound"
    INVALID_REQUEST = "InvalidRequest"
    INVALID_CREDENTIALS = "InvalidCredentials"
    FORBIDDEN = "Forbidden"
    ENDPOINT_NOT_FOUND = "EndpointNotFound"
    ENDPOINT_UNAVAILABLE = "EndpointUnavailable"
    RATE_LIMITED = "RateLimited"
    INVALID_RESPONSE = "InvalidResponse"
    INVALID_SPEC = "InvalidSpec"
    HOST_NOT_ALLOWED = "HostNotAllowed"
    SUSPENDED = "Suspended"
    SECRET_CONFLICT = "SecretConflict"
    #: The API server refused the target Secret (a quota, an admission webhook, a 5xx, a timeout).
    SECRET_WRITE_FAILED = "SecretWriteFailed"
    # Progress reasons, used on the Reconciling condition.
    ISSUING = "Issuing"
    RETRYING = "Retrying"
    UP_TO_DATE = "UpToDate"
    AS_EXPECTED = "AsExpected"


# Reasons a human must act on: retrying soon will not help (kstatus "Stalled").
STALLED_REASONS = frozenset(
    {
        Reason.CREDENTIALS_NOT_FOUND,
        Reason.INVALID_REQUEST,
        Reason.INVALID_CREDENTIALS,
        Reason.FORBIDDEN,
        Reason.ENDPOINT_NOT_FOUND,
        Reason.INVALID_SPEC,
        Reason.HOST_NOT_ALLOWED,
        Reason.SECRET_CONFLICT,
    }
)


#: Failures of the inputs themselves, found before any request: once the inputs pass, they
#: have changed by definition, so nothing is held back by the backoff these failures built up.
PRECONDITION_REASONS = frozenset(
    {Reason.CREDENTIALS_NOT_FOUND, Reason.INVALID_SPEC, Reason.HOST_NOT_ALLOWED, Reason.SECRET_CONFLICT}
)


class Condition(_Model):
    """The standard metav1.Condition shape."""

    type: str = Field(description="Ready, Reconciling or Stalled.")
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str = ""
    last_transition_time: datetime = Field(alias="lastTransitionTime")
    observed_generation: int | None = Field(default=None, alias="observedGeneration")


class LastFailure(_Model):
    """The last failed exchange: never holds a secret or a token."""

    reason: Reason | None = None
    http_status: int | None = Field(default=None, alias="httpStatus")
    code: int | None = Field(default=None, description="The endpoint's error code (gRPC status style).")
    message: str = ""
    retry_after_seconds: int | None = Field(
        default=None, alias="retryAfterSeconds", description="The endpoint's Retry-After, if it sent one."
    )
    inputs_hash: str | None = Field(
        default=None,
        alias="inputsHash",
        description="Keyed hash of the inputs of the failed exchange: a change to them is retried at once.",
    )


class RolloutRestartStatus(_Model):
    """The last rollout restart tokensync made for a new token."""

    time: datetime = Field(description="When the workloads were restarted.")
    restarted: list[str] = Field(default_factory=list, description="Kind/name of each workload restarted.")
    failed: list[str] = Field(
        default_factory=list, description="Kind/name: why, for each workload that could not be restarted."
    )


class ClientCredentialStatus(_Model):
    observed_generation: int | None = Field(default=None, alias="observedGeneration")
    conditions: list[Condition] = Field(default_factory=list)
    secret_name: str | None = Field(default=None, alias="secretName")
    token_type: str | None = Field(default=None, alias="tokenType")
    scope: str | None = None
    issued_at: datetime | None = Field(default=None, alias="issuedAt")
    expires_at: datetime | None = Field(default=None, alias="expiresAt")
    renewal_time: datetime | None = Field(default=None, alias="renewalTime")
    lifetime_source: LifetimeSource | None = Field(
        default=None,
        alias="lifetimeSource",
        description="Where the token's lifetime came from: ExpiresIn, JWT (the exp claim) or Default.",
    )
    failed_attempts: int = Field(default=0, alias="failedAttempts")
    last_failure_time: datetime | None = Field(default=None, alias="lastFailureTime")
    last_failure: LastFailure | None = Field(default=None, alias="lastFailure")
    last_refresh_request: str | None = Field(
        default=None,
        alias="lastRefreshRequest",
        description="The value of the tokensync.io/refresh-requested-at annotation last acted on.",
    )
    last_rollout_restart: RolloutRestartStatus | None = Field(default=None, alias="lastRolloutRestart")
    pending_refresh_request: str | None = Field(
        default=None,
        alias="pendingRefreshRequest",
        description="A refresh-requested-at value whose exchange failed: retried until a new token lands.",
    )


# Token endpoint payloads ---------------------------------------------------------------------

MAX_LIFETIME_SECONDS = 366 * 24 * 3600  # a lifetime longer than a year is a broken endpoint, not a token


class PalisadeTokenResponse(BaseModel):
    """The seed's 200 body: every field is required."""

    model_config = ConfigDict(extra="ignore")

    access_token: Annotated[str, StringConstraints(min_length=1)] = Field(alias="accessToken")
    scope: str
    expires_in: int = Field(alias="expiresIn", gt=0, le=MAX_LIFETIME_SECONDS)
    token_type: Annotated[str, StringConstraints(min_length=1)] = Field(alias="tokenType")

    @field_validator("expires_in", mode="before")
    @classmethod
    def _reject_non_integers(cls, value: Any) -> Any:
        # bool is an int in Python; "3600" would be coerced silently. Neither is the seed's shape.
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError("expiresIn must be an integer number of seconds")
        return value


class OAuth2TokenResponse(BaseModel):
    """RFC 6749 §5.1: expires_in is RECOMMENDED, scope OPTIONAL."""

    model_config = ConfigDict(extra="ignore")

    access_token: Annotated[str, StringConstraints(min_length=1)]
    token_type: Annotated[str, StringConstraints(min_length=1)]
    expires_in: int | None = Field(default=None, gt=0, le=MAX_LIFETIME_SECONDS)
    scope: str = ""


class PalisadeErrorBody(BaseModel):
    """The seed's gRPC-status style error body."""

    model_config = ConfigDict(extra="ignore")

    code: int
    message: str = ""
    details: list[dict[str, Any]] = Field(default_factory=list)


class OAuth2ErrorBody(BaseModel):
    """RFC 6749 §5.2."""

    model_config = ConfigDict(extra="ignore")

    error: str
    error_description: str = ""
