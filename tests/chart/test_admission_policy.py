"""The allowlist at admission: the chart's ValidatingAdmissionPolicy (templates/admissionpolicy.yaml).

The policy is rendered with helm and its CEL expressions are evaluated exactly as rendered, with celpy
(the CEL library the CRD tests use) plus the Kubernetes functions celpy lacks — ``url()``, ``isURL()``,
``getHost()``, ``getHostname()``, ``lowerAscii()``, ``find()`` — from kubecel.py, a port of the Go code
the API server runs for them. Evaluation follows the API server: variables in order, then each
validation; a false one denies with its messageExpression.

The reference is the operator's own check, ``tokensync.exchange.host_allowed`` on the URL the
operator would use (``ClientCredentialSpec.effective_token_url``): the policy must deny exactly what it
denies. Where they cannot agree (a URL Go's parser rejects or reads differently, a non-ASCII host name)
the policy is the stricter, and each such case is listed in a test of its own with the reason.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from functools import cache
from typing import Any

import pytest
import re2
import yaml
from celpy import celtypes
from celpy.adapter import json_to_cel
from celpy.evaluation import CELEvalError
from pydantic import ValidationError

from tokensync.exchange import host_allowed
from tokensync.models import PALISADE_TOKEN_URL, TOKEN_URL_PATTERN, ClientCredentialSpec, Provider
from tokensync.settings import DEFAULT_ALLOWED_TOKEN_HOSTS

from . import kubecel
from .support import CHART, REPO, VALUES_DIR, Rendered, helm_template, render_set, run, tool

DEFAULT_HOSTS = ("api.palisade.co", "api.sandbox.palisade.co")
POLICY_NAME = "tokensync-tokensync-allowed-token-hosts"  # <fullname>-<release namespace>-...
NAMESPACE = "team-a"


# --- rendering and evaluating the policy ---------------------------------------------------------------


@cache
def render(*extra: str) -> Rendered:
    return helm_template(*extra)


def with_hosts(*hosts: str) -> tuple[str, ...]:
    return ("--set-json", f"allowedTokenHosts={json.dumps(list(hosts))}")


@dataclass(frozen=True)
class Decision:
    allowed: bool
    message: str | None = None
    #: An evaluation error: the API server then denies the request (failurePolicy Fail).
    error: str | None = None


@dataclass(frozen=True)
class Policy:
    policy: dict[str, Any]
    binding: dict[str, Any]

    @classmethod
    def of(cls, rendered: Rendered) -> Policy:
        return cls(rendered.one("ValidatingAdmissionPolicy"), rendered.one("ValidatingAdmissionPolicyBinding"))

    @property
    def spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = self.policy["spec"]
        return spec

    def variable(self, name: str) -> str:
        [expression] = [v["expression"] for v in self.spec["variables"] if v["name"] == name]
        return str(expression)

    def decide(self, obj: dict[str, Any], *, old: dict[str, Any] | None = None) -> Decision:
        """The API server's decision on a CREATE (``old`` None) or UPDATE of ``obj``, for a matched request.

        Variables are evaluated lazily by the API server: an error in one matters only where it is used.
        Here it is kept as the variable's value, which CEL then propagates (or a short circuit drops). An
        error in the validation denies the request (failurePolicy Fail) with a generic message: the cases
        below assert that none happens where the CRD schema lets the URL through.
        """
        assert self.spec["failurePolicy"] == "Fail"
        operation = "CREATE" if old is None else "UPDATE"
        request = {
            "operation": operation,
            "namespace": obj["metadata"]["namespace"],
            "name": obj["metadata"]["name"],
            "resource": {"group": "tokensync.io", "version": "v1alpha1", "resource": "clientcredentials"},
        }
        activation: dict[str, Any] = {
            "object": json_to_cel(obj),
            "oldObject": json_to_cel(old),
            "request": json_to_cel(request),
        }
        variables: dict[celtypes.StringType, Any] = {}
        for variable in self.spec["variables"]:
            activation["variables"] = celtypes.MapType(variables)
            value: Any
            try:
                value = kubecel.program(variable["expression"]).evaluate(activation)
            except CELEvalError as exc:
                value = exc
            variables[celtypes.StringType(variable["name"])] = value
        activation["variables"] = celtypes.MapType(variables)
        for validation in self.spec["validations"]:
            try:
                result = kubecel.program(validation["expression"]).evaluate(activation)
            except CELEvalError as exc:
                return Decision(False, error=str(exc))
            assert isinstance(result, celtypes.BoolType), f"{validation['expression']!r} gave {result!r}"
            if not result:
                message = kubecel.program(validation["messageExpression"]).evaluate(activation)
                assert isinstance(message, str)
                assert "\n" not in message, "the API server drops a message with a line break"
                return Decision(False, str(message))
        return Decision(True)


@cache
def policy_for(*hosts: str) -> Policy:
    return Policy.of(render(*with_hosts(*hosts)))


def credential(spec: dict[str, Any], *, provider_default: bool = True, **metadata: Any) -> dict[str, Any]:
    """A ClientCredential as the policy sees it: after the CRD's defaulting (provider: palisade)."""
    full = {"credentialsRef": {"name": "palisade-credentials"}, **spec}
    if provider_default:
        full.setdefault("provider", "palisade")
    return {
        "apiVersion": "tokensync.io/v1alpha1",
        "kind": "ClientCredential",
        "metadata": {"name": "palisade", "namespace": NAMESPACE, **metadata},
        "spec": full,
    }


def with_url(url: str, provider: str = "palisade") -> dict[str, Any]:
    return credential({"provider": provider, "tokenURL": url})


def operator_url(spec: dict[str, Any]) -> str | None:
    """The URL the operator would send the credentials to (its own defaulting), without validating."""
    model = ClientCredentialSpec.model_construct(
        provider=Provider(spec.get("provider", "palisade")), token_url=spec.get("tokenURL")
    )
    return model.effective_token_url()


def operator_allows(spec: dict[str, Any], hosts: tuple[str, ...]) -> bool:
    """What the operator's allowlist says (no URL to check counts as allowed: nothing is sent)."""
    url = operator_url(spec)
    return url is None or host_allowed(url, hosts)


def operator_accepts_spec(url: str) -> bool:
    """Whether the operator's model takes this tokenURL at all (else: InvalidSpec, nothing is sent)."""
    try:
        ClientCredentialSpec.model_validate({"tokenURL": url, "credentialsRef": {"name": "c"}})
    except ValidationError:
        return False
    return True


def crd_accepts(url: str) -> bool:
    """Whether the CRD schema lets this tokenURL through to admission (its pattern, matched with RE2 as
    the API server matches it)."""
    return len(url) <= 2048 and re2.search(TOKEN_URL_PATTERN, url) is not None


def go_parses(url: str) -> bool:
    try:
        kubecel.parse_request_uri(url)
    except kubecel.GoURLError:
        return False
    return True


# --- what the chart renders ----------------------------------------------------------------------------


def test_the_default_chart_ships_the_policy_and_its_binding() -> None:
    policy = Policy.of(render_set("default"))
    assert policy.policy["apiVersion"] == policy.binding["apiVersion"] == "admissionregistration.k8s.io/v1"
    assert policy.policy["metadata"]["name"] == policy.binding["metadata"]["name"] == POLICY_NAME
    assert "namespace" not in policy.policy["metadata"]
    assert policy.spec["failurePolicy"] == "Fail"
    assert policy.binding["spec"] == {"policyName": POLICY_NAME, "validationActions": ["Deny"]}
    assert "paramKind" not in policy.spec, "the list is inlined: no params"
    assert "paramRef" not in policy.binding["spec"]
    constraints = policy.spec["matchConstraints"]
    # CREATE and UPDATE of the main resource only: status writes (a subresource) are never checked.
    assert constraints["resourceRules"] == [
        {
            "apiGroups": ["tokensync.io"],
            "apiVersions": ["*"],
            "operations": ["CREATE", "UPDATE"],
            "resources": ["clientcredentials"],
        }
    ]
    assert constraints["matchPolicy"] == "Equivalent"
    assert "namespaceSelector" not in constraints, "cluster-wide without watchNamespaces"
    [validation] = policy.spec["validations"]
    assert validation["reason"] == "Forbidden"
    assert validation["message"].endswith("api.palisade.co, api.sandbox.palisade.co"), validation["message"]
    # The same list the operator gets as --allowed-token-host.
    assert DEFAULT_HOSTS == DEFAULT_ALLOWED_TOKEN_HOSTS
    args = render_set("default").args
    assert [a.removeprefix("--allowed-token-host=") for a in args if a.startswith("--allowed-token-host=")] == list(
        DEFAULT_HOSTS
    )


def test_every_value_set_ships_it() -> None:
    for name in ("default", "namespaced", "ha"):
        Policy.of(render_set(name))


def test_allowed_hosts_are_a_cel_list_literal_of_the_values_lower_cased() -> None:
    policy = policy_for("Tokens.Example.COM", "127.0.0.1", "api.palisade.co")
    expression = policy.variable("allowedHosts")
    assert json.loads(expression) == ["tokens.example.com", "127.0.0.1", "api.palisade.co"]
    assert list(kubecel.program(expression).evaluate({})) == ["tokens.example.com", "127.0.0.1", "api.palisade.co"]
    [validation] = policy.spec["validations"]
    assert "tokens.example.com, 127.0.0.1, api.palisade.co" in validation["message"]
    assert "tokens.example.com, 127.0.0.1, api.palisade.co" in validation["messageExpression"]
    # The operator gets the values as given (it lower-cases them itself).
    assert "--allowed-token-host=Tokens.Example.COM" in render(*with_hosts("Tokens.Example.COM", "127.0.0.1")).args


def test_the_default_token_url_in_the_policy_is_the_operators() -> None:
    assert json.dumps(PALISADE_TOKEN_URL) in policy_for(*DEFAULT_HOSTS).variable("tokenURL")


def namespace_selected(constraints: dict[str, Any], namespace: str) -> bool:
    """A namespaceSelector's verdict on a namespace (labelled kubernetes.io/metadata.name by the API server)."""
    selector = constraints.get("namespaceSelector")
    if not selector:
        return True
    labels = {"kubernetes.io/metadata.name": namespace}
    assert set(selector) == {"matchExpressions"}
    for expression in selector["matchExpressions"]:
        assert expression["operator"] == "In"
        if labels.get(expression["key"]) not in expression["values"]:
            return False
    return True


def test_watch_namespaces_scope_the_policy_to_them() -> None:
    policy = Policy.of(render_set("namespaced"))  # watchNamespaces: [team-a, team-b]
    constraints = policy.spec["matchConstraints"]
    assert constraints["namespaceSelector"] == {
        "matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["team-a", "team-b"]}]
    }
    assert namespace_selected(constraints, "team-a")
    assert namespace_selected(constraints, "team-b")
    assert not namespace_selected(constraints, "team-c")
    assert not namespace_selected(constraints, "tokensync")
    cluster = Policy.of(render_set("default")).spec["matchConstraints"]
    assert all(namespace_selected(cluster, ns) for ns in ("team-a", "team-c", "kube-system"))


def test_sharded_releases_of_one_name_each_have_their_own_policy() -> None:
    """One release per group of namespaces (README: several operators), installed under the same release
    name in two namespaces: the cluster-scoped policies must not collide (Helm would refuse the second)."""
    names = set()
    for shard in ("shard-a", "shard-b"):
        watch = f"watchNamespaces={{{shard}}}"
        result = run([tool("helm"), "template", "tokensync", CHART, "--namespace", shard, "--set", watch])
        docs = [d for d in yaml.safe_load_all(result.stdout) if d]
        [policy] = [d for d in docs if d["kind"] == "ValidatingAdmissionPolicy"]
        [binding] = [d for d in docs if d["kind"] == "ValidatingAdmissionPolicyBinding"]
        assert binding["metadata"]["name"] == binding["spec"]["policyName"] == policy["metadata"]["name"]
        assert policy["spec"]["matchConstraints"]["namespaceSelector"]["matchExpressions"][0]["values"] == [shard]
        names.add(policy["metadata"]["name"])
    assert names == {"tokensync-shard-a-allowed-token-hosts", "tokensync-shard-b-allowed-token-hosts"}


def test_admission_policy_enabled_false_renders_neither_object() -> None:
    for extra in ((), ("--values", str(VALUES_DIR / "namespaced.yaml"))):
        rendered = render("--set", "admissionPolicy.enabled=false", *extra)
        kinds = {d["kind"] for d in rendered.docs}
        assert not kinds & {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
        assert "Deployment" in kinds


def test_the_values_schema_checks_admission_policy(tmp_path: Any) -> None:
    for values, message in (
        ("admissionPolicy: {enabled: 'no'}", "/admissionPolicy/enabled"),
        ("admissionPolicy: {enable: false}", "additional properties 'enable' not allowed"),
    ):
        path = tmp_path / "bad.yaml"
        path.write_text(values + "\n")
        result = run([tool("helm"), "template", "tokensync", CHART, "--values", path], check=False)
        assert result.returncode != 0, values
        assert message in result.stderr, result.stderr


def test_the_plain_manifests_carry_the_policy() -> None:
    docs = [d for d in yaml.safe_load_all((REPO / "deploy" / "tokensync.yaml").read_text()) if d]
    shipped = {d["kind"]: d for d in docs}
    default = Policy.of(render_set("default"))
    assert shipped["ValidatingAdmissionPolicy"] == default.policy
    assert shipped["ValidatingAdmissionPolicyBinding"] == default.binding


# --- decisions: the policy against the operator's host_allowed() -----------------------------------------

#: (URL, whether the default hosts allow it). Each is also compared with host_allowed().
DEFAULT_HOST_CASES = [
    pytest.param(PALISADE_TOKEN_URL, True, id="the Palisade production URL"),
    pytest.param("https://api.sandbox.palisade.co/v2/credentials/oauth/token", True, id="the sandbox"),
    pytest.param("https://api.palisade.co:8443/v2/credentials/oauth/token", True, id="an allowed host with a port"),
    pytest.param("https://api.palisade.co:/token", True, id="an empty port"),
    pytest.param("https://API.PALISADE.CO/v2/credentials/oauth/token", True, id="upper case"),
    pytest.param("https://Api.Sandbox.Palisade.Co/t", True, id="mixed case"),
    pytest.param("https://api.palisade.co./v2/credentials/oauth/token", True, id="a trailing dot"),
    pytest.param("https://api.palisade.co.:443/t", True, id="a trailing dot and a port"),
    pytest.param("https://api.palisade.co../t", True, id="two trailing dots"),
    pytest.param("https://api.palisade.co?next=@evil.example", True, id="an @ in the query is not user information"),
    pytest.param("https://api.palisade.co/oauth/@evil.example", True, id="an @ in the path is not user information"),
    pytest.param("https://evil.example/v2/credentials/oauth/token", False, id="a disallowed host"),
    pytest.param("https://api.palisade.co.evil.com/token", False, id="suffix trick: allowed name plus a domain"),
    pytest.param("https://evilapi.palisade.co/token", False, id="suffix trick: a name ending in the allowed name"),
    pytest.param("https://x.api.palisade.co/token", False, id="a subdomain of an allowed host"),
    pytest.param("https://palisade.co/token", False, id="the parent domain"),
    pytest.param("https://api.palisade.com/token", False, id="another top-level domain"),
    pytest.param("https://api..palisade.co/t", False, id="an empty label"),
    pytest.param("https://.api.palisade.co/t", False, id="a leading dot"),
    pytest.param("https://api.palisade.co.evil.com./t", False, id="suffix trick with a trailing dot"),
    pytest.param("https://api.palisade.co@evil.com/", False, id="userinfo trick"),
    pytest.param("https://api.palisade.co:443@evil.com/token", False, id="userinfo trick with a port"),
    pytest.param("https://a@api.palisade.co@evil.com/", False, id="userinfo trick with two @"),
    pytest.param("https://api.palisade.co%40evil.com/", False, id="an encoded @"),
    pytest.param("https://203.0.113.7/token", False, id="an IPv4 literal"),
    pytest.param("https://[2001:db8::1]/token", False, id="an IPv6 literal"),
    pytest.param("https://[::1]:8443/token", False, id="an IPv6 literal with a port"),
    pytest.param("https://[api.palisade.co]/token", False, id="an allowed name in brackets"),
    pytest.param("https://./t", False, id="a host of dots only"),
    pytest.param("https:///token", False, id="no host"),
    pytest.param("https://:443/token", False, id="only a port"),
]


def check_agrees(policy: Policy, hosts: tuple[str, ...], obj: dict[str, Any], expected: bool) -> Decision:
    decision = policy.decide(obj)
    assert decision.error is None, decision.error
    assert operator_allows(obj["spec"], hosts) is expected, "the case's expectation disagrees with the operator"
    assert decision.allowed is expected, decision.message
    return decision


@pytest.mark.parametrize(("url", "allowed"), DEFAULT_HOST_CASES)
def test_the_policy_decides_like_the_operator(url: str, allowed: bool) -> None:
    decision = check_agrees(policy_for(*DEFAULT_HOSTS), DEFAULT_HOSTS, with_url(url), allowed)
    if not allowed:
        assert decision.message is not None
        assert decision.message.startswith("spec.tokenURL ")
        assert decision.message.endswith(
            "; allowed token hosts (allowedTokenHosts of the tokensync chart): api.palisade.co, api.sandbox.palisade.co"
        )


@pytest.mark.parametrize(("url", "allowed"), DEFAULT_HOST_CASES)
def test_the_policy_decides_like_the_operator_for_oauth2_too(url: str, allowed: bool) -> None:
    check_agrees(policy_for(*DEFAULT_HOSTS), DEFAULT_HOSTS, with_url(url, "oauth2"), allowed)


CUSTOM_HOSTS = ("Tokens.Example.COM", "127.0.0.1")


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        pytest.param("https://tokens.example.com/oauth2/token", True, id="a listed host"),
        pytest.param("https://TOKENS.example.com:444/x", True, id="a listed host, other case, a port"),
        pytest.param("https://tokens.example.com./x", True, id="a listed host with a trailing dot"),
        pytest.param("https://127.0.0.1:8443/token", True, id="a listed IP address"),
        pytest.param("https://127.0.0.1./token", True, id="a listed IP address with a trailing dot"),
        pytest.param("https://127.0.0.2/token", False, id="another IP address"),
        pytest.param("https://2130706433/token", False, id="the listed address as one number: nothing is resolved"),
        pytest.param("https://0x7f.0.0.1/token", False, id="the listed address in hex: nothing is resolved"),
        pytest.param("https://localhost/token", False, id="a name for the listed address: nothing is resolved"),
        pytest.param(PALISADE_TOKEN_URL, False, id="Palisade when it is not listed"),
        pytest.param("https://tokens.example.com.evil.example/x", False, id="suffix trick"),
        pytest.param("https://tokens.example.com@127.0.0.2/x", False, id="userinfo trick"),
    ],
)
def test_custom_allowed_hosts_decide_like_the_operator(url: str, allowed: bool) -> None:
    check_agrees(policy_for(*CUSTOM_HOSTS), CUSTOM_HOSTS, with_url(url, "oauth2"), allowed)


def test_without_token_url_palisade_means_its_default_url() -> None:
    spec = {"provider": "palisade"}
    assert operator_url(spec) == PALISADE_TOKEN_URL
    # api.palisade.co allowed: admitted, with and without the CRD's provider default applied.
    check_agrees(policy_for(*DEFAULT_HOSTS), DEFAULT_HOSTS, credential(spec), True)
    check_agrees(policy_for(*DEFAULT_HOSTS), DEFAULT_HOSTS, credential({}, provider_default=False), True)
    # Only the sandbox allowed: the default URL's host is not, so it is denied, saying why.
    sandbox = ("api.sandbox.palisade.co",)
    decision = check_agrees(policy_for(*sandbox), sandbox, credential(spec), False)
    assert decision.message == (
        "the default tokenURL of provider palisade has the host api.palisade.co, which is not allowed; "
        "allowed token hosts (allowedTokenHosts of the tokensync chart): api.sandbox.palisade.co"
    )
    check_agrees(policy_for(*sandbox), sandbox, credential({}, provider_default=False), False)
    # The sandbox by URL is fine.
    check_agrees(policy_for(*sandbox), sandbox, with_url("https://api.sandbox.palisade.co/t"), True)


def test_oauth2_without_token_url_has_no_host_to_check() -> None:
    """Nothing is sent anywhere: the CRD schema rejects it first ('tokenURL is required when provider is oauth2')."""
    spec = {"provider": "oauth2"}
    assert operator_url(spec) is None
    for hosts in (DEFAULT_HOSTS, CUSTOM_HOSTS):
        assert policy_for(*hosts).decide(credential(spec)) == Decision(True)


def test_the_message_names_the_host_and_the_allowed_hosts() -> None:
    decision = policy_for(*DEFAULT_HOSTS).decide(with_url("https://Tokens.Evil.Example:8443/token"))
    assert decision.message == (
        "spec.tokenURL has the host tokens.evil.example, which is not allowed; "
        "allowed token hosts (allowedTokenHosts of the tokensync chart): api.palisade.co, api.sandbox.palisade.co"
    )
    decision = policy_for(*DEFAULT_HOSTS).decide(with_url("https://[::1]:8443/token"))
    assert decision.message is not None
    assert decision.message.startswith("spec.tokenURL has the host [::1]:8443, which is not allowed;")
    decision = policy_for(*DEFAULT_HOSTS).decide(with_url("https://api.palisade.co:https/token"))
    assert decision.message is not None
    assert decision.message.startswith("spec.tokenURL is not a valid URL with a host name;")
    # The static message, for when a messageExpression cannot be evaluated, says the same without the host.
    [validation] = policy_for(*DEFAULT_HOSTS).spec["validations"]
    assert validation["message"] == (
        "the token host of spec.tokenURL is not allowed; "
        "allowed token hosts (allowedTokenHosts of the tokensync chart): api.palisade.co, api.sandbox.palisade.co"
    )


# --- updates -----------------------------------------------------------------------------------------------


def test_an_update_is_checked_when_it_changes_spec() -> None:
    policy = policy_for(*DEFAULT_HOSTS)
    allowed = with_url(PALISADE_TOKEN_URL)
    evil = with_url("https://evil.example/token")
    assert not policy.decide(evil, old=allowed).allowed, "moving the token URL to a disallowed host"
    assert policy.decide(allowed, old=evil).allowed, "moving it back to an allowed host"
    other_ref = credential({"tokenURL": "https://evil.example/token", "credentialsRef": {"name": "other"}})
    assert not policy.decide(other_ref, old=evil).allowed, "any spec change needs an allowed host"
    no_url = credential({})
    assert (
        not policy_for("api.sandbox.palisade.co")
        .decide(no_url, old=with_url("https://api.sandbox.palisade.co/t"))
        .allowed
    )


def test_an_update_that_keeps_spec_is_admitted() -> None:
    """Metadata-only updates of a resource whose host is (no longer) allowed: labels, annotations, the
    removal of the old kopf finalizer by the operator. Otherwise such a resource could not even be deleted
    once it has a finalizer. The operator still refuses its host (HostNotAllowed)."""
    policy = policy_for(*DEFAULT_HOSTS)
    old = with_url("https://evil.example/token")
    old["metadata"]["finalizers"] = ["tokensync.io/finalizer"]
    new = with_url("https://evil.example/token")
    new["metadata"]["labels"] = {"team": "payments"}
    assert policy.decide(new, old=old) == Decision(True)
    assert not operator_allows(new["spec"], DEFAULT_HOSTS)


# --- where the policy is stricter than host_allowed() --------------------------------------------------


@pytest.mark.parametrize(
    ("url", "hosts", "operator_takes_the_spec", "why"),
    [
        pytest.param(
            "https://api.palisade.co:https/token",
            DEFAULT_HOSTS,
            False,
            "a port that is not a number: Go rejects the URL; the operator's model too (InvalidSpec)",
            id="a port that is not a number",
        ),
        pytest.param(
            "https://api.palisade.co:443:443/token",
            DEFAULT_HOSTS,
            False,
            "two ports: Go reads the host as api.palisade.co:443, Python as api.palisade.co; the model rejects it",
            id="two ports",
        ),
        pytest.param(
            "https://evil.example\\@api.palisade.co/token",
            DEFAULT_HOSTS,
            False,
            "a backslash in the user information: Go rejects it; the CRD pattern forbids '\\' and '@'",
            id="a backslash in the user information",
        ),
        pytest.param(
            "https://api.palisade.co#@evil.example/",
            DEFAULT_HOSTS,
            False,
            "a '#' in the authority: ParseRequestURI (isURL) keeps it there and rejects it; the CRD forbids '#'",
            id="a fragment with an @",
        ),
        pytest.param(
            "https://api.palisade.co\t/token",
            DEFAULT_HOSTS,
            False,
            "a tab: Python drops it, Go rejects control characters; the CRD forbids whitespace",
            id="a tab",
        ),
        pytest.param(
            "https://api.palisade.co/%zz",
            DEFAULT_HOSTS,
            True,
            "an invalid %-escape in the path: Go rejects the whole URL; Python only reads the host",
            id="an invalid escape in the path",
        ),
    ],
)
def test_where_the_policy_is_stricter_than_host_allowed(
    url: str, hosts: tuple[str, ...], operator_takes_the_spec: bool, why: str
) -> None:
    assert host_allowed(url, hosts), why
    assert operator_accepts_spec(url) is operator_takes_the_spec, why
    decision = policy_for(*hosts).decide(with_url(url))
    assert not decision.allowed, why
    assert decision.error is None, decision.error


def test_a_kelvin_sign_is_refused_by_both() -> None:
    # Python's str.lower() makes U+212A a "k"; the operator lower-cases ASCII only, like lowerAscii().
    url = "https://\u212aube.example/token"
    assert not host_allowed(url, ("kube.example",))
    assert not policy_for("kube.example").decide(with_url(url)).allowed


def test_non_ascii_letters_that_lower_to_ascii_are_only_the_kelvin_sign() -> None:
    """Python's str.lower() vs CEL's lowerAscii(): the only code point that lower-cases into an allowed
    (ASCII) host name character is U+212A, the one case listed above."""
    special = [chr(c) for c in range(0x80, 0x110000) if not 0xD800 <= c < 0xE000 and chr(c).lower().isascii()]
    assert special == ["\u212a"]


# --- fuzzed URLs ---------------------------------------------------------------------------------------------

PIECES = (
    "api", "sandbox", "palisade", "co", "com", "evil", "API", "Palisade", ".", ".", ".", "..", "-", "@", "@", ":",
    ":443", ":8443", ":", "[", "]", "::1", "%40", "%2e", "%C3%A9", "%", "%zz", "/", "?", "#", "\\", "\u00e9",
    "\u212a", "127.0.0.1", "0", " ", "!", "~", "_", "=", "&", "'", "$", "+", ",", ";", "*", "(", ")",
)  # fmt: skip
PREFIXES = ("https://",) * 8 + ("HTTPS://", "https:", "https:/", "http://", "https:///", "//", "")


def fuzzed_urls(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    urls = []
    for _ in range(count):
        body = "".join(rng.choice(PIECES) for _ in range(rng.randint(1, 9)))
        if rng.random() < 0.5:
            body = rng.choice(("api.palisade.co", "api.sandbox.palisade.co", "API.palisade.CO.")) + body
        urls.append(rng.choice(PREFIXES) + body + rng.choice(("", "/token", "/v2?x=@y", ":443/t")))
    return urls


def test_fuzzed_urls_never_pass_the_policy_when_the_operator_refuses_them() -> None:
    """On 2,000 seeded random URLs around the allowed names: the policy never admits a URL host_allowed()
    refuses; and wherever the operator takes the spec, Go parses the URL and it is ASCII, the two agree.
    (Outside that, the stricter cases are the ones listed above.) An evaluation error, which denies with a
    generic message, happens only for URLs the CRD schema rejects before admission: ``isURL`` accepts a
    scheme-less ``//host...`` as a path where ``url()`` parses its authority, and ``url()`` checks a
    fragment after a query that ``isURL`` does not."""
    policy = policy_for(*DEFAULT_HOSTS)
    compared = 0
    for url in fuzzed_urls(2000, seed=8):
        decision = policy.decide(with_url(url))
        admitted = decision.allowed
        allowed = host_allowed(url, DEFAULT_HOSTS)
        assert allowed or not admitted, f"the policy admits {url!r}, which the operator refuses"
        assert decision.error is None or not crd_accepts(url), f"{url!r}: {decision.error}"
        if url.isascii() and go_parses(url) and operator_accepts_spec(url):
            assert admitted is allowed, f"{url!r}: policy {admitted}, operator {allowed}"
            compared += 1
    assert compared > 200  # the agreement is not vacuous


# --- the Go net/url port behind url() ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "host", "hostname"),
    [
        # The examples that document k8s.io/apiserver/pkg/cel/library/urls.go.
        ("https://user:pass@example.com:80/path?query=val#fragment", "example.com:80", "example.com"),
        ("/absolute-path", "", ""),
        ("https://example.com:80/", "example.com:80", "example.com"),
        ("https://example.com/", "example.com", "example.com"),
        ("https://[::1]:80/", "[::1]:80", "::1"),
        ("https://[::1]/", "[::1]", "::1"),
        ("/path", "", ""),
        ("https://127.0.0.1:80/", "127.0.0.1:80", "127.0.0.1"),
        # Go's net/url behaviour (url_test.go).
        ("http://j@ne:password@google.com/p@th?q=@go", "google.com", "google.com"),
        ("http://[fe80::1%25en0]/", "[fe80::1%en0]", "fe80::1%en0"),
        ("http://[fe80::1%25%65%6e%301-._~]:8080/", "[fe80::1%en01-._~]:8080", "fe80::1%en01-._~"),
        ("http://%C3%A9.example/", "\u00e9.example", "\u00e9.example"),
        ("mailto:someone@example.com", "", ""),
        ("https://x:1:2/", "x:1:2", "x:1"),
        ("https://Example.COM/", "Example.COM", "Example.COM"),
    ],
)
def test_url_port_reads_hosts_like_go(url: str, host: str, hostname: str) -> None:
    assert kubecel.program("isURL(u)").evaluate({"u": celtypes.StringType(url)})
    assert kubecel.program("url(u).getHost()").evaluate({"u": celtypes.StringType(url)}) == host
    assert kubecel.program("url(u).getHostname()").evaluate({"u": celtypes.StringType(url)}) == hostname


@pytest.mark.parametrize(
    "url",
    [
        "https://a:b:c/",  # urls.go: invalid port
        "../relative-path",  # urls.go: not absolute
        "",
        "http://%41:8080/",  # an escaped ASCII byte in a host
        "http://192.168.0.%31/",
        "http://[::1]a/",  # invalid port "a" after host
        "http://[::1/",  # missing ']'
        "http://a b.com/",  # invalid character " " in host name
        "http://x|y/",
        "http://x/%",  # invalid escape in the path
        "http://ex\x7fample.com/",  # a control character
        "http://us\u00e9r@example.com/",  # a non-ASCII user
        ":foo",  # missing protocol scheme
    ],
)
def test_url_port_rejects_what_go_rejects(url: str) -> None:
    assert not kubecel.program("isURL(u)").evaluate({"u": celtypes.StringType(url)})
    with pytest.raises(CELEvalError, match="URL parse error"):
        kubecel.program("url(u).getHostname()").evaluate({"u": celtypes.StringType(url)})


def test_lower_ascii_and_find_as_in_kubernetes() -> None:
    def cel(expression: str) -> Any:
        return kubecel.program(expression).evaluate({})

    assert cel("'TacoCat'.lowerAscii()") == "tacocat"
    assert cel("'TacoCÆt Xii'.lowerAscii()") == "tacocÆt xii"
    assert cel("'\u212a'.lowerAscii()") == "\u212a"
    assert cel("'abc 123'.find('[0-9]+')") == "123"
    assert cel("'abc'.find('[0-9]+')") == ""
    assert cel("'api.palisade.co..'.find('^.*[^.]')") == "api.palisade.co"
    assert cel("'...'.find('^.*[^.]')") == ""
