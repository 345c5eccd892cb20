"""The Kubernetes CEL functions the chart's admission policy uses and celpy lacks, as custom functions.

celpy (cel-python) implements the CEL standard library only. The ValidatingAdmissionPolicy in
helm/tokensync/templates/admissionpolicy.yaml also calls what the API server adds:

- ``url(string)``, ``isURL(string)``, ``<URL>.getHost()``, ``<URL>.getHostname()``: Kubernetes' URL
  library (k8s.io/apiserver/pkg/cel/library/urls.go). ``isURL`` is ``err == nil`` from Go's
  ``url.ParseRequestURI``; ``url`` checks with ``ParseRequestURI`` and then returns ``url.Parse``'s result;
  ``getHost`` is ``URL.Host``, ``getHostname`` is ``URL.Hostname()``. Below is a line-by-line port of the
  parts of Go's net/url they run (``parse``, ``getScheme``, ``parseAuthority``, ``parseHost``,
  ``unescape``, ``shouldEscape``, ``validOptionalPort``, ``validUserinfo``, ``splitHostPort``,
  ``setPath``/``setFragment``'s unescaping) as in Go 1.22, which Kubernetes 1.30 is built with. Go works on
  bytes, so the port does too; a host name that is not valid UTF-8 after %-decoding is decoded with
  replacement characters (it cannot equal an allowed host either way). Newer Go rejects more bracketed
  hosts (non-IP names in brackets, since 1.24.8/1.25.2); that only makes ``isURL`` false more often.
- ``<string>.lowerAscii()``: cel-go's strings extension (ASCII letters only, as cel-go does).
- ``<string>.find(regex)``: Kubernetes' regex library: the first match, or ``''`` (RE2, like celpy's
  own ``matches``).

The expressions under test are evaluated exactly as the chart renders them; only these functions come
from here. tests/chart/test_admission_policy.py checks the port against the examples that document
urls.go and Go's net/url.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

import celpy
import re2
from celpy import celtypes
from celpy.evaluation import CELEvalError

# --- Go's net/url (the parts url()/isURL()/getHost()/getHostname() run) ------------------------------

ENCODE_PATH, ENCODE_HOST, ENCODE_ZONE, ENCODE_USER_PASSWORD, ENCODE_FRAGMENT = range(5)


class GoURLError(ValueError):
    """What Go's url.Parse / url.ParseRequestURI would return as an error."""


@dataclass(frozen=True)
class GoURL:
    """The fields of Go's url.URL that the URL library's getters read."""

    scheme: str
    opaque: str
    host: bytes
    path: bytes

    def hostname(self) -> str:
        host, _ = _split_host_port(self.host)
        return host.decode("utf-8", "replace")


def _ishex(c: int) -> bool:
    return chr(c) in "0123456789abcdefABCDEF"


def _unhex(c: int) -> int:
    return int(chr(c), 16)


def _should_escape(c: int, mode: int) -> bool:
    ch = chr(c)
    if ch.isascii() and ch.isalnum():
        return False
    if mode in (ENCODE_HOST, ENCODE_ZONE) and ch in "!$&'()*+,;=:[]<>\"":
        return False
    if ch in "-_.~":
        return False
    if ch in "$&+,/:;=?@":
        if mode == ENCODE_PATH:
            return ch == "?"
        if mode == ENCODE_USER_PASSWORD:
            return ch in "@/?:"
        if mode == ENCODE_FRAGMENT:
            return False
    # Everything else must be escaped (the fragment may keep these sub-delims).
    return not (mode == ENCODE_FRAGMENT and ch in "!()*")


def _unescape(s: bytes, mode: int) -> bytes:
    i = 0
    while i < len(s):
        c = s[i]
        if c == ord("%"):
            if i + 2 >= len(s) or not _ishex(s[i + 1]) or not _ishex(s[i + 2]):
                raise GoURLError(f"invalid URL escape {s[i : i + 3]!r}")
            if mode == ENCODE_HOST and _unhex(s[i + 1]) < 8 and s[i : i + 3] != b"%25":
                raise GoURLError(f"invalid URL escape {s[i : i + 3]!r}")
            if mode == ENCODE_ZONE:
                v = _unhex(s[i + 1]) << 4 | _unhex(s[i + 2])
                if s[i : i + 3] != b"%25" and v != ord(" ") and _should_escape(v, ENCODE_HOST):
                    raise GoURLError(f"invalid URL escape {s[i : i + 3]!r}")
            i += 3
        else:
            if mode in (ENCODE_HOST, ENCODE_ZONE) and c < 0x80 and _should_escape(c, mode):
                raise GoURLError(f"invalid character {chr(c)!r} in host name")
            i += 1
    out = bytearray()
    i = 0
    while i < len(s):
        if s[i] == ord("%"):
            out.append(_unhex(s[i + 1]) << 4 | _unhex(s[i + 2]))
            i += 3
        else:
            out.append(s[i])
            i += 1
    return bytes(out)


def _valid_optional_port(port: bytes) -> bool:
    if port == b"":
        return True
    return port[:1] == b":" and all(ord("0") <= b <= ord("9") for b in port[1:])


def _valid_userinfo(s: bytes) -> bool:
    # Go ranges over runes: any non-ASCII rune is invalid.
    return all(ch.isascii() and (ch.isalnum() or ch in "-._:~!$&'()*+,;=%@") for ch in s.decode("utf-8", "replace"))


def _get_scheme(raw: bytes) -> tuple[bytes, bytes]:
    for i, c in enumerate(raw):
        ch = chr(c)
        if ch.isascii() and ch.isalpha():
            continue
        if ch.isascii() and (ch.isdigit() or ch in "+-."):
            if i == 0:
                return b"", raw
            continue
        if ch == ":":
            if i == 0:
                raise GoURLError("missing protocol scheme")
            return raw[:i], raw[i + 1 :]
        return b"", raw
    return b"", raw


def _parse_host(host: bytes) -> bytes:
    if host.startswith(b"["):
        i = host.rfind(b"]")
        if i < 0:
            raise GoURLError("missing ']' in host")
        if not _valid_optional_port(host[i + 1 :]):
            raise GoURLError(f"invalid port {host[i + 1 :]!r} after host")
        zone = host[:i].find(b"%25")
        if zone >= 0:
            return (
                _unescape(host[:zone], ENCODE_HOST)
                + _unescape(host[zone:i], ENCODE_ZONE)
                + _unescape(host[i:], ENCODE_HOST)
            )
    else:
        i = host.rfind(b":")
        if i != -1 and not _valid_optional_port(host[i:]):
            raise GoURLError(f"invalid port {host[i:]!r} after host")
    return _unescape(host, ENCODE_HOST)


def _parse_authority(authority: bytes) -> bytes:
    i = authority.rfind(b"@")
    host = _parse_host(authority if i < 0 else authority[i + 1 :])
    if i >= 0:
        userinfo = authority[:i]
        if not _valid_userinfo(userinfo):
            raise GoURLError("net/url: invalid userinfo")
        for part in userinfo.split(b":", 1):
            _unescape(part, ENCODE_USER_PASSWORD)
    return host


def _parse(raw: bytes, via_request: bool) -> GoURL:
    if any(b < 0x20 or b == 0x7F for b in raw):
        raise GoURLError("net/url: invalid control character in URL")
    if raw == b"" and via_request:
        raise GoURLError("empty url")
    if raw == b"*":
        return GoURL(scheme="", opaque="", host=b"", path=b"*")
    scheme_bytes, rest = _get_scheme(raw)
    scheme = scheme_bytes.decode().lower()
    # Cut off the query (a lone trailing "?" is ForceQuery).
    rest = rest[:-1] if rest.endswith(b"?") and rest.count(b"?") == 1 else rest.partition(b"?")[0]
    if not rest.startswith(b"/"):
        if scheme:
            return GoURL(scheme=scheme, opaque=rest.decode("utf-8", "replace"), host=b"", path=b"")
        if via_request:
            raise GoURLError("invalid URI for request")
        if b":" in rest.partition(b"/")[0]:
            raise GoURLError("first path segment in URL cannot contain colon")
    host = b""
    if (scheme or (not via_request and not rest.startswith(b"///"))) and rest.startswith(b"//"):
        authority, slash, path = rest[2:].partition(b"/")
        rest = slash + path
        host = _parse_authority(authority)
    return GoURL(scheme=scheme, opaque="", host=host, path=_unescape(rest, ENCODE_PATH))


def parse(raw: str) -> GoURL:
    """Go's url.Parse."""
    data = raw.encode("utf-8", "surrogatepass")
    without_fragment, hash_, fragment = data.partition(b"#")
    url = _parse(without_fragment, via_request=False)
    if hash_ and fragment:
        _unescape(fragment, ENCODE_FRAGMENT)
    return url


def parse_request_uri(raw: str) -> GoURL:
    """Go's url.ParseRequestURI."""
    return _parse(raw.encode("utf-8", "surrogatepass"), via_request=True)


def _split_host_port(host_port: bytes) -> tuple[bytes, bytes]:
    host, port = host_port, b""
    colon = host.rfind(b":")
    if colon != -1 and _valid_optional_port(host[colon:]):
        host, port = host[:colon], host[colon + 1 :]
    if host.startswith(b"[") and host.endswith(b"]"):
        host = host[1:-1]
    return host, port


# --- the CEL functions ----------------------------------------------------------------------------------


def cel_url(value: Any) -> Any:
    try:
        parse_request_uri(str(value))
        return parse(str(value))
    except GoURLError as exc:
        return CELEvalError(f"URL parse error during conversion from string: {exc}", GoURLError, (str(exc),))


def cel_is_url(value: Any) -> celtypes.BoolType:
    try:
        parse_request_uri(str(value))
    except GoURLError:
        return celtypes.BoolType(False)
    return celtypes.BoolType(True)


def cel_get_host(url: GoURL) -> celtypes.StringType:
    return celtypes.StringType(url.host.decode("utf-8", "replace"))


def cel_get_hostname(url: GoURL) -> celtypes.StringType:
    return celtypes.StringType(url.hostname())


def cel_lower_ascii(value: Any) -> celtypes.StringType:
    return celtypes.StringType("".join(chr(ord(c) + 32) if "A" <= c <= "Z" else c for c in str(value)))


def cel_find(value: Any, pattern: Any) -> celtypes.StringType:
    match = re2.search(str(pattern), str(value))
    return celtypes.StringType(match.group(0) if match else "")


FUNCTIONS = {
    "url": cel_url,
    "isURL": cel_is_url,
    "getHost": cel_get_host,
    "getHostname": cel_get_hostname,
    "lowerAscii": cel_lower_ascii,
    "find": cel_find,
}

ENVIRONMENT = celpy.Environment()


@cache
def program(expression: str) -> celpy.Runner:
    """Compile one CEL expression with the Kubernetes functions above."""
    return ENVIRONMENT.program(ENVIRONMENT.compile(expression), functions=FUNCTIONS)
