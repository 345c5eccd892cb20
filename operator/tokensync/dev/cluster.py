"""An in-memory Kubernetes API server for integration tests and the no-cluster demo.

It is built on ``kmock`` (the kopf author's Kubernetes API mock): :class:`DevClusterHandler`
subclasses :class:`kmock.KubernetesEmulator`, keeps kmock's API discovery (``/api``, ``/apis``,
``/apis/{group}/{version}``, ``/version``, fed from ``kmock.resources``) and its DSL for
anything that is not a resource URL, and serves resource requests wholesale itself, because
plain kmock 0.8 is not faithful enough for kopf. Relative to plain kmock 0.8, it adds or fixes:

* Metadata: ``uid``, ``resourceVersion`` (one global etcd-like counter), ``creationTimestamp``
  and ``generation`` are assigned. ``generation`` bumps only on non-metadata changes, and for
  resources with a status subresource only on non-status changes (and when deletion starts).
* ``managedFields``: every create, update and patch renews the writer's entry (one per manager,
  operation ``Update``, plus ``subresource: status`` for status writes). The manager is
  ``?fieldManager=`` or the User-Agent's product (``"unknown"`` without one); ``fieldsV1`` is a
  placeholder naming the top-level fields written: ownership is not tracked.
* Metadata-only responses, negotiated from the Accept header as the apiserver does (the first
  media type it can serve; only JSON is served, so protobuf offers are skipped):
  ``as=PartialObjectMetadataList;g=meta.k8s.io;v=v1`` (or ``v1beta1``) for lists,
  ``as=PartialObjectMetadata`` for single objects and watch events (bookmarks included).
  A list view of one object, or the other way round, answers ``406 NotAcceptable``, as does an
  Accept header whose every ``as=`` offer is unknown (a watch asked for a list view streams
  whole objects, as the apiserver does).
* Paged lists: ``limit`` and an opaque ``continue`` token, sorted by namespace/name, with
  ``remainingItemCount`` when there are no selectors (as etcd). A malformed token, or a token
  with a ``resourceVersion``, answers ``400``; a token older than the event log answers ``410``.
* Optimistic concurrency: a PATCH/PUT whose body carries a stale ``metadata.resourceVersion``
  gets ``409 Conflict``; so do stale DELETE preconditions.
* Patching: merge-patch, JSON patch (all RFC 6902 ops; a failed ``test`` op answers ``422``,
  which kopf relies on for finalizers) and strategic-merge (treated as merge-patch).
  No-op writes do not bump ``resourceVersion`` and emit no watch event.
* Watches: a bounded per-resource event log; ``resourceVersion=N`` streams only events after N
  (no replay of ADDED on reconnects), ``timeoutSeconds`` closes the stream, BOOKMARKs are sent
  when allowed, ``sendInitialEvents`` is honoured, and a too-old N gets a ``410`` ERROR event.
* Label selectors (``=``, ``==``, ``!=``, ``in``, ``notin``, ``key``, ``!key``, ``>``, ``<``)
  and field selectors (``=``, ``==``, ``!=`` on any dotted path) for list, watch and
  deletecollection; watches see objects entering/leaving a selector as ADDED/DELETED.
* Tables for ``kubectl get``: custom resources (declared with their CRD's printer columns, see
  :meth:`ResourceDecl.from_crd`) answer ``as=Table;g=meta.k8s.io;v=v1`` (or ``v1beta1``) with the
  Table the apiserver renders: Name, then each column's JSONPath (client-go's, ported), formatted by
  type ("date": the time since, ``<invalid>`` in the future), ``?includeObject=`` honoured. Built-in
  kinds skip the Table offer (the stand-in has none of their printers; kubectl prints NAME and AGE
  from whole objects); watches stream whole objects. Discovery lists subresources after their
  resource, without its short names (kmock copies them, and kubectl then warns about "cc").
* The status subresource is separate: writes to the main resource ignore ``.status``;
  writes to ``/status`` change only ``.status``.
* PUT (replace) of the main resource and ``/status``, and DELETE of a collection.
* ``generateName`` makes a name with a random suffix.
* Background garbage collection by ``ownerReferences`` (recursive; ``Orphan`` propagation
  strips the references instead).
* Errors are Kubernetes ``Status`` bodies: 404 NotFound, 409 AlreadyExists/Conflict,
  422 Invalid, 410 Expired, 400 BadRequest, 405 MethodNotAllowed, 406 NotAcceptable,
  415 UnsupportedMediaType.
* DELETE honours finalizers; the object goes when the last finalizer is removed, and no new
  finalizers can be added once the deletion has started.
* A Secret's ``stringData`` is folded into base64 ``data`` (and ``type`` defaults to Opaque).
* Validation that operators trip over answers 422 Invalid (400 for undecodable base64):
  object names (RFC 1123), label and annotation keys and values, finalizer names,
  ownerReferences, Secret/ConfigMap data keys and their 1 MiB limit, immutable Secrets and
  ConfigMaps, a Secret's immutable ``type``. Request bodies may be up to 3 MiB, as in the apiserver.
* Throughput stays flat: kmock re-filters its whole request log on every request, so the log
  is bounded and resource requests bypass kmock's reaction matching entirely.
* URLs that kmock's parser rejects with a 500 (e.g. ``/api/v1/namespaces``) are served;
  discovery URLs with the kubernetes client's trailing slashes (``/apis/``) are served;
  the core group's ``groupVersion`` is ``v1`` (kmock says ``/v1``).

Request accounting, as an audit log names requests: every resource request (reads, failures and
requests for undeclared resources too) counts by verb (get, list, watch, create, update, patch,
delete, deletecollection), API group, resource (``plural`` or ``plural/subresource``) and
namespace ("" for cluster-scoped and all-namespaces requests): see
:meth:`FakeCluster.request_counts` and :meth:`FakeCluster.api_calls`. Other processes read them
with ``GET /_devcluster/requests`` (``{"requests": [{"verb", "group", "resource", "namespace",
"count"}, ...]}``) and reset them with ``DELETE`` on the same URL. Requests naming one object (a
create names it in its body) also count per object: :meth:`FakeCluster.object_request_counts`.

Fault injection (thread-safe, for tests; see :class:`FakeCluster`): :meth:`FakeCluster.inject`
answers matching resource requests with a given error ``Status`` (or holds them unanswered with
``hang=True``) and returns a :class:`Fault` handle (``hits``, ``waiting``, ``remove()``);
:meth:`FakeCluster.freeze` stops answering every request and every open watch stream (connections
stay open; events are held and delivered on :meth:`FakeCluster.thaw`);
:meth:`FakeCluster.expire_watches` ends open watches with a ``410 Gone`` ERROR event (and makes
older resourceVersions too old), and :meth:`FakeCluster.drop_watches` cuts them off abruptly.
Faulted and held requests count in the request accounting like any other.

Every resource must be declared (:class:`ResourceDecl`); CRD objects register nothing.
Run standalone with ``python -m tokensync.dev.cluster [--host H] [--port P] [--kubeconfig PATH]
[--port-file PATH]``: it prints its URL, and writes the port (last, atomically) to ``--port-file``.

The server runs in its own thread with its own event loop (:class:`FakeCluster`), because
``kopf.operator()`` cancels the asyncio tasks created after it starts in its own loop.
It is served by aiohttp's low-level server rather than ``kmock.Server``: the latter patches
aiohttp's DNS resolver process-wide and must be exited strictly LIFO, which breaks when
several servers in different threads stop in any order.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import builtins
import collections
import concurrent.futures
import contextlib
import datetime
import decimal
import functools
import json
import math
import re
import secrets
import signal
import sys
import threading
import unicodedata
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar, cast

import aiohttp.web
import attrs
import kmock
import yaml
from typing_extensions import override

from .. import crd as _crd

__all__ = [
    "DEFAULT_RESOURCES",
    "DevClusterHandler",
    "FakeCluster",
    "Fault",
    "JsonPathError",
    "PrinterColumn",
    "ResourceDecl",
    "execute_jsonpath",
    "go_float",
    "go_json",
    "human_duration",
]

JsonDict = dict[str, Any]
_T = TypeVar("_T")

_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# The audit log's verbs for HTTP methods; a GET without a name is a list (or a watch).
_METHOD_VERBS = {"GET": "get", "HEAD": "get", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
# Go's strconv.ParseBool, which the apiserver uses for query flags such as watch=1.
_TRUE_FLAGS = frozenset({"1", "t", "T", "TRUE", "true", "True"})
# The stand-in's own URLs (request counts); no Kubernetes path starts with an underscore.
_REQUESTS_PATH = "/_devcluster/requests"
_MAIN_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
# The same alphabet as the apiserver's generateName suffixes (no vowels, no look-alikes).
_NAME_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
# Metadata the server owns: clients cannot set or change it via writes to the main resource.
_SERVER_OWNED_META = (
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
)


# --------------------------------------------------------------------------------------------
# Printer columns: what `kubectl get` prints for a custom resource, rendered by the server.
#
# kubectl asks for a meta.k8s.io Table and prints the cells it gets. For a custom resource the
# apiserver computes them from the CRD's additionalPrinterColumns (apiextensions-apiserver's
# tableconvertor): a Name column, then each column's JSONPath evaluated by client-go's
# util/jsonpath with missing keys allowed, and each value formatted by the column's type.
# What follows is a port of those three pieces: the JSONPath parser and evaluator (with their
# quirks: the first value of the first result is shown, errors and missing values leave a cell
# empty), Go's text and JSON rendering of values in "string" columns, and the cell formats of
# the other types, with apimachinery's HumanDuration for "date" columns.
# --------------------------------------------------------------------------------------------


class JsonPathError(ValueError):
    """A JSONPath template that client-go's parser rejects (or the stand-in does not support)."""


class _EvalError(Exception):
    """A failed JSONPath step, with the values client-go returns alongside the error.

    Those values matter in one place: an existence filter (``[?(@.x)]``) keeps an element when
    evaluating ``@.x`` on it returned values, even together with an error.
    """

    def __init__(self, message: str, values: list[Any]) -> None:
        super().__init__(message)
        self.values = values


@dataclass
class _ListNode:
    nodes: list[_JsonPathNode] = field(default_factory=list)


@dataclass(frozen=True)
class _TextNode:
    text: str


@dataclass(frozen=True)
class _FieldNode:
    name: str


@dataclass(frozen=True)
class _SliceParam:
    value: int = 0
    known: bool = False
    derived: bool = False


@dataclass(frozen=True)
class _ArrayNode:
    params: tuple[_SliceParam, _SliceParam, _SliceParam]


@dataclass(frozen=True)
class _FilterNode:
    left: _ListNode
    right: _ListNode
    operator: str  # "exists", "==", "!=", "<", ">", "<=", ">=" (or whatever else was written)


@dataclass(frozen=True)
class _LiteralNode:
    value: int | float | bool


@dataclass(frozen=True)
class _WildcardNode:
    pass


@dataclass(frozen=True)
class _RecursiveNode:
    pass


@dataclass(frozen=True)
class _UnionNode:
    lists: tuple[_ListNode, ...]


@dataclass(frozen=True)
class _IdentifierNode:
    name: str


_JsonPathNode = (
    _ListNode
    | _TextNode
    | _FieldNode
    | _ArrayNode
    | _FilterNode
    | _LiteralNode
    | _WildcardNode
    | _RecursiveNode
    | _UnionNode
    | _IdentifierNode
)

_DICT_KEY_RE = re.compile(r"'([^']*)'")
_SLICE_RE = re.compile(r"(-?[0-9]*)(:-?[0-9]*)?(:-?[0-9]*)?")  # RE2's \d: ASCII digits
_FILTER_RE = re.compile(r"([^!<>=]+)([!<>=]+)(.+?)")
_GO_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\"}


def _is_alphanumeric(char: str | None) -> bool:
    """Go's unicode.IsLetter or unicode.IsDigit, or an underscore."""
    return char is not None and (char == "_" or char.isalpha() or unicodedata.category(char) == "Nd")


def _is_terminator(char: str | None) -> bool:
    return char is None or char in " \t\r\n.,[]$@{}"


def _go_unquote(quoted: str) -> str:
    """client-go's UnquoteExtend: strconv.Unquote, for single quotes too."""
    if len(quoted) < 2 or quoted[0] != quoted[-1] or quoted[0] not in "\"'":
        raise JsonPathError(f"unquote string {quoted} error invalid syntax")
    quote, body = quoted[0], quoted[1:-1]
    out: list[str] = []
    i = 0
    while i < len(body):
        char = body[i]
        if char == quote:
            raise JsonPathError(f"unquote string {quoted} error invalid syntax")
        if char != "\\":
            out.append(char)
            i += 1
            continue
        escape = body[i + 1 : i + 2]
        if escape in _GO_ESCAPES:
            out.append(_GO_ESCAPES[escape])
            i += 2
        elif escape == quote:
            out.append(quote)
            i += 2
        elif escape in ("x", "u", "U"):
            width = {"x": 2, "u": 4, "U": 8}[escape]
            digits = body[i + 2 : i + 2 + width]
            if len(digits) != width or not all(c in "0123456789abcdefABCDEF" for c in digits):
                raise JsonPathError(f"unquote string {quoted} error invalid syntax")
            out.append(chr(int(digits, 16)))
            i += 2 + width
        elif escape and escape in "01234567":
            digits = body[i + 1 : i + 4]
            if len(digits) != 3 or not all(c in "01234567" for c in digits) or int(digits, 8) > 255:
                raise JsonPathError(f"unquote string {quoted} error invalid syntax")
            out.append(chr(int(digits, 8)))
            i += 4
        else:
            raise JsonPathError(f"unquote string {quoted} error invalid syntax")
    return "".join(out)


class _JsonPathParser:
    """A port of client-go's util/jsonpath parser (``{...}`` actions in a text template)."""

    def __init__(self, text: str) -> None:
        self.input = text
        self.pos = 0
        self.start = 0
        self.width = 0
        self.root = _ListNode()

    @classmethod
    def parse(cls, text: str) -> _ListNode:
        parser = cls(text)
        parser._run()
        return parser.root

    @classmethod
    def parse_action(cls, text: str) -> _ListNode:
        """The list node of one action (client-go's parseAction: ``{text}``)."""
        node = cls.parse("{" + text + "}").nodes[0]
        assert isinstance(node, _ListNode)
        return node

    def _next(self) -> str | None:
        if self.pos >= len(self.input):
            self.width = 0
            return None
        self.width = 1
        self.pos += 1
        return self.input[self.pos - 1]

    def _peek(self) -> str | None:
        char = self._next()
        self._backup()
        return char

    def _backup(self) -> None:
        self.pos -= self.width

    def _consume(self) -> str:
        value = self.input[self.start : self.pos]
        self.start = self.pos
        return value

    def _run(self) -> None:
        current: _ListNode | None = None  # None: in the text between actions
        while True:
            if current is None:
                brace = self.input.find("{", self.pos)
                if brace < 0:
                    self.pos = len(self.input)
                    if self.pos > self.start:
                        self.root.nodes.append(_TextNode(self._consume()))
                    return
                self.pos = brace
                if self.pos > self.start:
                    self.root.nodes.append(_TextNode(self._consume()))
                self.pos += 1
                self._consume()
                current = _ListNode()
                self.root.nodes.append(current)
            current = self._inside_action(current)

    def _inside_action(self, current: _ListNode) -> _ListNode | None:
        """One step inside an action; the list to go on with, or None once the action is closed."""
        if self.input.startswith("}", self.pos):
            self.pos += 1
            self._consume()
            return None
        if self.input.startswith("[?(", self.pos):
            self._parse_filter(current)
            return current
        if self.input.startswith("..", self.pos):
            self._parse_recursive(current)
            return current
        char = self._next()
        if char is None or char in "\r\n":
            raise JsonPathError("unclosed action")
        if char in " @$":
            self._consume()
        elif char == "[":
            self._parse_array(current)
        elif char in "\"'":
            self._parse_quote(current, char)
        elif char == ".":
            self._parse_field(current)
        elif char in "+-" or unicodedata.category(char) == "Nd":
            self._backup()
            self._parse_number(current)
        elif _is_alphanumeric(char):
            self._backup()
            self._parse_identifier(current)
        else:
            raise JsonPathError(f"unrecognized character in action: {char!r}")
        return current

    def _parse_identifier(self, current: _ListNode) -> None:
        while not _is_terminator(self._next()):
            pass
        self._backup()
        value = self._consume()
        current.nodes.append(_LiteralNode(value == "true") if value in ("true", "false") else _IdentifierNode(value))

    def _parse_recursive(self, current: _ListNode) -> None:
        if current.nodes and isinstance(current.nodes[-1], _RecursiveNode):
            raise JsonPathError("invalid multiple recursive descent")
        self.pos += 2
        self._consume()
        current.nodes.append(_RecursiveNode())
        if _is_alphanumeric(self._peek()):
            self._parse_field(current)

    def _parse_number(self, current: _ListNode) -> None:
        if self._peek() in ("+", "-"):
            self._next()
        while (char := self._next()) is not None and (char == "." or unicodedata.category(char) == "Nd"):
            pass
        self._backup()
        value = self._consume()
        if re.fullmatch(r"[+-]?[0-9]+", value):
            current.nodes.append(_LiteralNode(int(value)))
        elif re.fullmatch(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)", value):
            current.nodes.append(_LiteralNode(float(value)))
        else:
            raise JsonPathError(f"cannot parse number {value}")

    def _parse_array(self, current: _ListNode) -> None:
        while True:
            char = self._next()
            if char is None or char == "\n":
                raise JsonPathError("unterminated array")
            if char == "]":
                break
        text = self._consume()[1:-1]
        if text == "*":
            text = ":"
        parts = text.split(",")
        if len(parts) > 1:
            current.nodes.append(_UnionNode(tuple(self.parse_action(f"[{part.strip(' ')}]") for part in parts)))
            return
        if key := _DICT_KEY_RE.fullmatch(text):
            current.nodes.extend(self.parse_action(f".{key[1]}").nodes)
            return
        match = _SLICE_RE.fullmatch(text)
        if match is None:
            raise JsonPathError(f"invalid array index {text}")
        params: list[_SliceParam] = []
        for index, group in enumerate(match.groups(default="")):
            if group:
                number = group[1:] if index > 0 else group
                if index > 0 and number == "":
                    params.append(_SliceParam())
                elif re.fullmatch(r"[+-]?[0-9]+", number):
                    params.append(_SliceParam(int(number), known=True))
                else:
                    raise JsonPathError(f"array index {number} is not a number")
            elif index == 1:
                params.append(_SliceParam(params[0].value + 1, known=True, derived=True))
            else:
                params.append(_SliceParam())
        current.nodes.append(_ArrayNode((params[0], params[1], params[2])))

    def _parse_filter(self, current: _ListNode) -> None:
        self.pos += 3
        self._consume()
        begin = end = False
        pair = ""
        while True:
            char = self._next()
            if char is None or char == "\n":
                raise JsonPathError("unterminated filter")
            if char in "\"'":
                if not begin:
                    begin, pair = True, char
                    continue
                if self.input[self.pos - 2] != "\\" and char == pair:
                    end = True
            elif char == ")" and begin == end:
                break
        if self._next() != "]":
            raise JsonPathError("unclosed array expect ]")
        text = self._consume()[:-2]
        match = _FILTER_RE.fullmatch(text)
        if match is None:
            current.nodes.append(_FilterNode(self.parse_action(text), _ListNode(), "exists"))
        else:
            left, operator, right = match.groups()
            current.nodes.append(_FilterNode(self.parse_action(left), self.parse_action(right), operator))

    def _parse_quote(self, current: _ListNode, end: str) -> None:
        while True:
            char = self._next()
            if char is None or char == "\n":
                raise JsonPathError("unterminated quoted string")
            if char == end and self.input[self.pos - 2] != "\\":
                break
        current.nodes.append(_TextNode(_go_unquote(self._consume())))

    def _parse_field(self, current: _ListNode) -> None:
        self._consume()
        while True:
            char = self._next()
            if char == "\\":
                self._next()
            elif _is_terminator(char):
                self._backup()
                break
        value = self._consume()
        current.nodes.append(_WildcardNode() if value == "*" else _FieldNode(value.replace("\\", "")))


def _jsonpath_nodes(node: _JsonPathNode) -> Iterator[_JsonPathNode]:
    yield node
    children: Iterable[_JsonPathNode] = ()
    if isinstance(node, _ListNode):
        children = node.nodes
    elif isinstance(node, _FilterNode):
        children = (node.left, node.right)
    elif isinstance(node, _UnionNode):
        children = node.lists
    for child in children:
        yield from _jsonpath_nodes(child)


def compile_jsonpath(template: str) -> _ListNode:
    """Parse a JSONPath template as client-go does (``{.status.conditions[?(@.type=="Ready")].status}``).

    ``range``/``end`` blocks are not supported (printer columns are simple paths); they raise
    :class:`JsonPathError`, as do templates client-go rejects.
    """
    root = _JsonPathParser.parse(template)
    for node in _jsonpath_nodes(root):
        if isinstance(node, _IdentifierNode) and node.name in ("range", "end"):
            raise JsonPathError(f"{template!r}: range/end blocks are not supported by the stand-in")
    return root


def find_results(template: _ListNode, data: Any) -> list[list[Any]]:
    """client-go's ``JSONPath.FindResults`` with ``AllowMissingKeys(true)``: one list of values per top-level node.

    Raises :class:`ValueError` where client-go returns an error.
    """
    try:
        return [_walk([data], node) for node in template.nodes]
    except _EvalError as e:
        raise ValueError(str(e)) from None


def _walk(values: list[Any], node: _JsonPathNode) -> list[Any]:
    if isinstance(node, _ListNode):
        for child in node.nodes:
            values = _walk(values, child)  # an error carries the failing step's values, as evalList returns them
        return values
    if isinstance(node, _TextNode):
        return [node.text]
    if isinstance(node, _FieldNode):
        return [_as_stored(v[node.name]) for v in values if isinstance(v, dict) and node.name in v]
    if isinstance(node, _ArrayNode):
        return _eval_array(values, node)
    if isinstance(node, _FilterNode):
        return _eval_filter(values, node)
    if isinstance(node, _LiteralNode):
        return [node.value] * len(values)
    if isinstance(node, _WildcardNode):
        return [child for v in values for child in _children(v)]
    if isinstance(node, _RecursiveNode):
        return _eval_recursive(values)
    if isinstance(node, _UnionNode):
        found: list[Any] = []
        for branch in node.lists:
            try:
                found.extend(_walk(values, branch))
            except _EvalError as e:
                raise _EvalError(str(e), values) from None
        return found
    raise _EvalError(f"unrecognized identifier {node.name}", values)


def _children(value: Any) -> list[Any]:
    """What a wildcard or a recursive descent enumerates (a string's bytes, as Go indexes strings)."""
    if isinstance(value, dict):
        return [_as_stored(v) for v in value.values()]
    if isinstance(value, list):
        return [_as_stored(v) for v in value]
    if isinstance(value, str):
        return list(value.encode())
    return []


def _eval_recursive(values: list[Any]) -> list[Any]:
    found: list[Any] = []
    for value in values:
        children = _children(value)
        if children:
            found.append(value)
            found.extend(_eval_recursive(children))
    return found


def _go_type(value: Any) -> str:
    if isinstance(value, dict):
        return "map[string]interface {}"
    for kind, name in ((bool, "bool"), (int, "int64"), (float, "float64"), (str, "string")):
        if isinstance(value, kind):
            return name
    return "interface {}"


def _eval_array(values: list[Any], node: _ArrayNode) -> list[Any]:
    found: list[Any] = []
    for value in values:
        if value is None:
            continue
        if not isinstance(value, list):
            raise _EvalError(f"{_go_type(value)} is not array or slice", values)
        first, last, step_param = node.params
        length = len(value)
        start = first.value if first.known else 0
        if start < 0:
            start += length
        stop = last.value if last.known else length
        if stop < 0 or (stop == 0 and last.derived):
            stop += length
        if stop == start:
            return found  # zero elements asked for: client-go returns at once, whatever the other values
        if start >= length or start < 0:
            raise _EvalError(f"array index out of bounds: index {start}, length {length}", values)
        if stop > length or stop < 0:
            raise _EvalError(f"array index out of bounds: index {stop - 1}, length {length}", values)
        if start > stop:
            raise _EvalError(f"starting index {start} is greater than ending index {stop}", values)
        step = 1
        if step_param.known:
            if step_param.value <= 0:
                raise _EvalError("step must be > 0", values)
            step = step_param.value
        found.extend(_as_stored(item) for item in value[start:stop:step])
    return found


def _eval_filter(values: list[Any], node: _FilterNode) -> list[Any]:
    found: list[Any] = []
    for value in values:
        if not isinstance(value, list):
            raise _EvalError(f"{value} is not array or slice and cannot be filtered", values)
        for item in map(_as_stored, value):
            error: _EvalError | None = None
            try:
                lefts = _walk([item], node.left)
            except _EvalError as e:
                lefts, error = e.values, e
            if node.operator == "exists":
                if lefts:
                    found.append(item)
                continue
            if error is not None:
                raise _EvalError(str(error), values)
            if not lefts:
                continue
            if len(lefts) > 1:
                raise _EvalError("can only compare one element at a time", values)
            try:
                rights = _walk([item], node.right)
            except _EvalError as e:
                raise _EvalError(str(e), values) from None
            if not rights:
                continue
            if len(rights) > 1:
                raise _EvalError("can only compare one element at a time", values)
            try:
                passed = _go_compare(node.operator, lefts[0], rights[0])
            except ValueError as e:
                raise _EvalError(str(e), found) from None
            if passed:
                found.append(item)
    return found


def _as_stored(value: Any) -> Any:
    """A number of an object as the apiserver reads it back (the JSONPath steps that take values from data apply it).

    etcd holds the JSON that Go wrote: float64(3) there is 3, read back as an integer. So a stored
    3.0 prints as 3 (1e6 as 1000000, not 1e+06) and equals the literal 3 in a filter.
    """
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return int(value)
    return value


def _comparison_kind(value: Any) -> str:
    """The kind of a value as Go's text/template compares it (ints of any size are one kind)."""
    for kind, name in ((bool, "bool"), (int, "int"), (float, "float"), (str, "string")):
        if isinstance(value, kind):
            return name
    raise ValueError("invalid type for comparison")


def _go_compare(operator: str, left: Any, right: Any) -> bool:
    """client-go's forked text/template eq, ne, lt, le, gt, ge: values of different kinds do not compare."""

    def equal() -> bool:
        if _comparison_kind(left) != _comparison_kind(right):
            raise ValueError("incompatible types for comparison")
        return bool(left == right)

    def less() -> bool:
        kind = _comparison_kind(left)
        if kind != _comparison_kind(right):
            raise ValueError("incompatible types for comparison")
        if kind == "bool":
            raise ValueError("invalid type for comparison")
        return bool(left < right)

    match operator:
        case "==":
            return equal()
        case "!=":
            return not equal()
        case "<":
            return less()
        case "<=":
            return less() or equal()
        case ">":
            return not (less() or equal())
        case ">=":
            return not less()
    raise ValueError(f"unrecognized filter operator {operator}")


# ----- Go's rendering of values -----


def _shortest_digits(value: float) -> tuple[str, int]:
    """The shortest digits that read back as ``abs(value)``, and the decimal point: value = 0.digits * 10**dp."""
    decimal_value = decimal.Decimal(repr(abs(value)))
    digits = "".join(map(str, decimal_value.as_tuple().digits)).lstrip("0")
    exponent = cast(int, decimal_value.as_tuple().exponent)
    stripped = digits.rstrip("0")
    exponent += len(digits) - len(stripped)
    return stripped, len(stripped) + exponent


def _go_fmt_e(digits: str, dp: int, precision: int) -> str:
    mantissa = digits[0] + ("." + digits[1 : precision + 1].ljust(precision, "0") if precision > 0 else "")
    exponent = dp - 1
    sign = "-" if exponent < 0 else "+"
    return f"{mantissa}e{sign}{abs(exponent):02d}"


def _go_fmt_f(digits: str, dp: int, precision: int) -> str:
    whole = digits[:dp].ljust(dp, "0") if dp > 0 else "0"
    if precision <= 0:
        return whole
    fraction = "".join(digits[j] if 0 <= j < len(digits) else "0" for j in range(dp, dp + precision))
    return f"{whole}.{fraction}"


def go_float(value: float, *, json_style: bool = False) -> str:
    """A float64 as Go prints it: ``fmt.Sprint`` (``%v``: shortest ``%g``), or ``encoding/json`` with ``json_style``."""
    sign = "-" if math.copysign(1.0, value) < 0 else ""
    if value == 0:
        return f"{sign}0"
    digits, dp = _shortest_digits(value)
    if json_style:
        if 1e-6 <= abs(value) < 1e21:
            return sign + _go_fmt_f(digits, dp, max(len(digits) - dp, 0))
        text = _go_fmt_e(digits, dp, len(digits) - 1)
        return sign + re.sub(r"e-0(\d)$", r"e-\1", text)  # encoding/json writes e-7, not e-07
    if dp - 1 < -4 or dp - 1 >= 6:  # shortest %g: exponent form outside [1e-4, 1e6)
        return sign + _go_fmt_e(digits, dp, len(digits) - 1)
    return sign + _go_fmt_f(digits, dp, max(len(digits) - dp, 0))


def _go_json_string(text: str) -> str:
    encoded = json.dumps(text, ensure_ascii=False)  # escapes as Go does (\n, \b, \u001f), but for these:
    for char in "<>&\u2028\u2029":
        encoded = encoded.replace(char, f"\\u{ord(char):04x}")
    return encoded


def go_json(value: Any) -> str:
    """``json.Marshal`` of a decoded JSON value, as Go writes it: compact, map keys sorted, HTML characters escaped."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return go_float(value, json_style=True)
    if isinstance(value, str):
        return _go_json_string(value)
    if isinstance(value, list):
        return "[" + ",".join(go_json(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{_go_json_string(k)}:{go_json(v)}" for k, v in sorted(value.items())) + "}"
    raise TypeError(f"not a JSON value: {value!r}")


def _go_print(value: Any) -> str:
    """How client-go's ``JSONPath.PrintResults`` prints one value: maps and lists as JSON, the rest with fmt."""
    if isinstance(value, dict | list):
        return go_json(value)
    if value is None:
        return "<no value>"  # text/template's printableValue of an invalid (nil) value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return go_float(value)
    return str(value)


def execute_jsonpath(template: str, data: Any) -> str:
    """client-go's ``JSONPath.Execute`` with missing keys allowed: the text ``kubectl -o jsonpath`` would print.

    A null prints as ``null`` here; in a Table's string column, as ``<no value>`` (the tableconvertor
    hands the printer a bare nil).
    """
    found = find_results(compile_jsonpath(template), data)
    return "".join(" ".join("null" if v is None else _go_print(v) for v in values) for values in found)


def human_duration(elapsed: datetime.timedelta) -> str:
    """apimachinery's ``duration.HumanDuration``: ~2-3 significant figures; ``<invalid>`` from 2 s in the future."""
    micros = elapsed // datetime.timedelta(microseconds=1)
    seconds = -(-micros // 1_000_000) if micros < 0 else micros // 1_000_000  # int(d.Seconds()) truncates
    if seconds < -1:
        return "<invalid>"
    if seconds < 0:
        return "0s"
    if seconds < 60 * 2:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 10:
        rest = seconds % 60
        return f"{minutes}m" if rest == 0 else f"{minutes}m{rest}s"
    if minutes < 60 * 3:
        return f"{minutes}m"
    hours = seconds // 3600
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h" if rest == 0 else f"{hours}h{rest}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rest = hours % 24
        return f"{hours // 24}d" if rest == 0 else f"{hours // 24}d{rest}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        rest = (hours // 24) % 365
        return f"{hours // 24 // 365}y" if rest == 0 else f"{hours // 24 // 365}y{rest}d"
    return f"{hours // 24 // 365}y"


_RFC3339_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:[.,](\d+))?(?:Z|([+-])(\d{2}):(\d{2}))", re.ASCII
)
_ZERO_TIME = datetime.datetime(1, 1, 1, tzinfo=datetime.UTC)  # Go's time.Time{}


def _parse_rfc3339(text: str) -> datetime.datetime | None:
    """Go's ``time.Parse(time.RFC3339, text)``; None where it fails."""
    match = _RFC3339_RE.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, sign, offset_hours, offset_minutes = match.groups()
    if (sign and (int(offset_hours) > 23 or int(offset_minutes) > 59)) or int(hour) > 23:
        return None
    micros = int((fraction or "0")[:6].ljust(6, "0"))
    offset = datetime.timedelta(hours=int(offset_hours or 0), minutes=int(offset_minutes or 0))
    zone = datetime.timezone(-offset if sign == "-" else offset)
    try:  # out of range: month 13, February 30, second 60 (Go refuses leap seconds); years before 1 AD
        return datetime.datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), micros, tzinfo=zone
        )
    except ValueError:
        return None


def _date_cell(text: str, now: datetime.datetime) -> str:
    """A "date" cell: the time since an RFC 3339 timestamp (``metav1.Time.UnmarshalQueryParameter``, HumanDuration)."""
    if text in ("", "null"):
        return "<unknown>"  # the zero time
    parsed = _parse_rfc3339(text)
    if parsed is None:
        return "<invalid>"
    try:
        if parsed == _ZERO_TIME:
            return "<unknown>"
        return human_duration(now - parsed)
    except OverflowError:  # an offset pushes it before 1 AD: long, long ago
        return human_duration(now - _ZERO_TIME)


def _typed_cell(column_type: str, value: Any, now: datetime.datetime) -> Any:
    """The tableconvertor's ``cellForJSONValue``: a value of the wrong type leaves the cell empty."""
    value = _as_stored(value)
    if value is None or (isinstance(value, bool) and column_type in ("integer", "number")):
        return None
    if column_type == "integer" and isinstance(value, int | float):
        return int(value)  # Go's int64(float64) truncates toward zero
    if column_type == "number" and isinstance(value, int | float):
        return _as_stored(float(value))  # a float64, which Go's encoding/json writes as 3 when it is 3.0
    if column_type == "boolean" and isinstance(value, bool):
        return value
    if column_type == "string" and isinstance(value, str):
        return value
    if column_type == "date" and isinstance(value, str):
        return _date_cell(value, now)
    return None


#: The types a CRD's printer column may have (apiextensions validation).
PRINTER_COLUMN_TYPES = frozenset({"integer", "number", "string", "boolean", "date"})
# metav1.ObjectMeta's API documentation, which the apiserver uses as column descriptions.
_NAME_DESCRIPTION = (
    "Name must be unique within a namespace. Is required when creating resources, although some resources "
    "may allow a client to request the generation of an appropriate name automatically. Name is primarily "
    "intended for creation idempotence and configuration definition. Cannot be updated. More info: "
    "https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names"
)
_CREATION_TIMESTAMP_DESCRIPTION = (
    "CreationTimestamp is a timestamp representing the server time when this object was created. It is not "
    "guaranteed to be set in happens-before order across separate operations. Clients may not set this value. "
    "It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. "
    "More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"
)
#: The first column of every custom resource's Table.
NAME_COLUMN_DEFINITION: JsonDict = {
    "name": "Name",
    "type": "string",
    "format": "name",
    "description": _NAME_DESCRIPTION,
    "priority": 0,
}


@dataclass(frozen=True)
class PrinterColumn:
    """One of a CRD version's ``additionalPrinterColumns``: the server renders them into what ``kubectl get`` prints."""

    name: str
    type: str  # integer, number, string, boolean or date
    json_path: str  # a simple JSONPath such as ".status.secretName"
    format: str = ""
    description: str = ""
    priority: int = 0  # 0: shown by default; higher: with -o wide
    _template: _ListNode = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.type not in PRINTER_COLUMN_TYPES:
            allowed = ", ".join(sorted(PRINTER_COLUMN_TYPES))
            raise ValueError(f"printer column {self.name!r}: type must be one of {allowed}")
        if not self.json_path.startswith("."):
            raise ValueError(f"printer column {self.name!r}: must be a simple json path starting with .")
        try:
            template = compile_jsonpath("{" + self.json_path + "}")
        except JsonPathError as e:
            message = f"printer column {self.name!r}: unrecognized column definition {self.json_path!r}: {e}"
            raise JsonPathError(message) from None
        object.__setattr__(self, "_template", template)

    @classmethod
    def from_crd(cls, column: Mapping[str, Any]) -> PrinterColumn:
        """From a CRD's ``additionalPrinterColumns`` entry (apiextensions.k8s.io/v1)."""
        return cls(
            name=column["name"],
            type=column["type"],
            json_path=column["jsonPath"],
            format=column.get("format") or "",
            description=column.get("description") or "",
            priority=int(column.get("priority") or 0),
        )

    def definition(self) -> JsonDict:
        """The ``columnDefinitions`` entry of a Table (metav1.TableColumnDefinition)."""
        description = self.description or f"Custom resource definition column (in JSONPath format): {self.json_path}"
        return {
            "name": self.name,
            "type": self.type,
            "format": self.format,
            "description": description,
            "priority": self.priority,
        }

    def cell(self, obj: Mapping[str, Any], now: datetime.datetime | None = None) -> Any:
        """The cell of this column for ``obj`` (None: empty, which kubectl prints as ``<none>``)."""
        try:
            results = find_results(self._template, obj)
        except ValueError:
            return None
        if not results or not results[0]:
            return None
        value = results[0][0]  # "as we only support simple JSON path, we can assume to have only one result"
        if self.type == "string":
            return _go_print(value)
        return _typed_cell(self.type, value, now or datetime.datetime.now(datetime.UTC))


#: What a CRD without printer columns shows: the apiserver serves this one by default.
AGE_COLUMN = PrinterColumn("Age", "date", ".metadata.creationTimestamp", description=_CREATION_TIMESTAMP_DESCRIPTION)


@dataclass(frozen=True)
class ResourceDecl:
    """A resource served by the fake cluster (what a CRD or a built-in API would declare)."""

    group: str  # "" for core
    version: str  # "v1"
    plural: str  # "secrets"
    kind: str  # "Secret"
    namespaced: bool = True
    subresources: tuple[str, ...] = ()  # e.g. ("status",)
    shortnames: tuple[str, ...] = ()
    singular: str = ""  # defaults to the lowercased kind
    # Custom resources and workloads maintain metadata.generation; Secrets, ConfigMaps,
    # Events, Namespaces, and Leases do not have it in a real cluster.
    generation: bool = True
    categories: tuple[str, ...] = ()  # e.g. ("tokensync",): `kubectl get tokensync` lists them
    # A custom resource's printer columns (its CRD version's additionalPrinterColumns): the server
    # renders them into the Table `kubectl get` asks for; an empty tuple is a CRD without any,
    # shown with an Age column. None: a built-in kind. The stand-in has none of the apiserver's
    # built-in printers, so it answers Table requests for those with whole objects, from which
    # kubectl prints NAME and AGE itself.
    printer_columns: tuple[PrinterColumn, ...] | None = None

    @classmethod
    def from_crd(cls, crd: Mapping[str, Any], version: str | None = None) -> ResourceDecl:
        """The declaration of a CRD's version (apiextensions.k8s.io/v1; by default its storage version)."""
        if crd.get("apiVersion") != "apiextensions.k8s.io/v1" or crd.get("kind") != "CustomResourceDefinition":
            raise ValueError("not an apiextensions.k8s.io/v1 CustomResourceDefinition")
        spec, names = crd["spec"], crd["spec"]["names"]
        versions = [v for v in spec["versions"] if (v["name"] == version if version else v.get("storage"))]
        if len(versions) != 1:
            raise ValueError(f"{crd['metadata']['name']}: no version {version or '(storage)'}")
        served = versions[0]
        return cls(
            group=spec["group"],
            version=served["name"],
            plural=names["plural"],
            kind=names["kind"],
            namespaced=spec["scope"] == "Namespaced",
            subresources=tuple(sorted(served.get("subresources") or {})),
            shortnames=tuple(names.get("shortNames") or ()),
            singular=names.get("singular") or "",
            categories=tuple(names.get("categories") or ()),
            printer_columns=tuple(PrinterColumn.from_crd(c) for c in served.get("additionalPrinterColumns") or ()),
        )

    @property
    def table_columns(self) -> tuple[PrinterColumn, ...] | None:
        """The columns the server renders after Name (Age alone for a CRD without printer columns); None: built-in."""
        if self.printer_columns is None:
            return None
        return self.printer_columns or (AGE_COLUMN,)

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources

    @property
    def qualified_name(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural


DEFAULT_RESOURCES: tuple[ResourceDecl, ...] = (
    ResourceDecl("", "v1", "namespaces", "Namespace", namespaced=False, generation=False,
                 subresources=("status",), shortnames=("ns",)),
    ResourceDecl("", "v1", "secrets", "Secret", generation=False),
    ResourceDecl("", "v1", "configmaps", "ConfigMap", generation=False, shortnames=("cm",)),
    ResourceDecl("", "v1", "events", "Event", generation=False, shortnames=("ev",)),
    ResourceDecl("events.k8s.io", "v1", "events", "Event", generation=False, shortnames=("ev",)),
    ResourceDecl("apps", "v1", "deployments", "Deployment", subresources=("status",), shortnames=("deploy",)),
    ResourceDecl("apps", "v1", "statefulsets", "StatefulSet", subresources=("status",), shortnames=("sts",)),
    ResourceDecl("apps", "v1", "daemonsets", "DaemonSet", subresources=("status",), shortnames=("ds",)),
    ResourceDecl("coordination.k8s.io", "v1", "leases", "Lease", generation=False),
    # As the CRD declares it (its printer columns too), generated from the models as crds/ is.
    ResourceDecl.from_crd(_crd.build_crd()),
    ResourceDecl("kopf.dev", "v1", "kopfpeerings", "KopfPeering"),
    ResourceDecl("kopf.dev", "v1", "clusterkopfpeerings", "ClusterKopfPeering", namespaced=False),
)  # fmt: skip


# --------------------------------------------------------------------------------------------
# Errors rendered as Kubernetes Status bodies.
# --------------------------------------------------------------------------------------------


class ApiError(Exception):
    """A failed request, answered with a Kubernetes ``Status`` body."""

    def __init__(
        self, code: int, reason: str, message: str, details: JsonDict | None = None, *, retry_after: int | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details
        self.retry_after = retry_after  # sent as a Retry-After header, as the apiserver does for 429/503

    def body(self) -> JsonDict:
        body: JsonDict = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


def _details(decl: ResourceDecl, name: str | None) -> JsonDict:
    details: JsonDict = {"kind": decl.plural}
    if decl.group:
        details["group"] = decl.group
    if name:
        details["name"] = name
    return details


def _not_found(decl: ResourceDecl, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{decl.qualified_name} "{name}" not found', _details(decl, name))


def _conflict(decl: ResourceDecl, name: str) -> ApiError:
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {decl.qualified_name} "{name}": the object has been '
        "modified; please apply your changes to the latest version and try again",
        _details(decl, name),
    )


def _invalid(decl: ResourceDecl, name: str | None, message: str) -> ApiError:
    return ApiError(422, "Invalid", message, _details(decl, name))


def _bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def _no_such_path() -> ApiError:
    # A fresh instance per raise: re-raising one instance would keep growing its traceback.
    return ApiError(404, "NotFound", "the server could not find the requested resource")


# --------------------------------------------------------------------------------------------
# Fault injection.
# --------------------------------------------------------------------------------------------

#: The verbs a fault can name, as an audit log names requests.
FAULT_VERBS = frozenset({"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"})
#: The apiserver's reasons for the statuses tests inject most (``metav1.StatusReason``).
_DEFAULT_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
    413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


class Fault:
    """An injected failure of the fake cluster: which requests it matches and how it answers them.

    Made by :meth:`FakeCluster.inject`; every attribute is safe to read from any thread.
    ``None`` in a matching field means "any". ``subresource`` ``None`` matches requests for the
    main resource only (``"*"``: any) unless ``resource`` is ``None`` too.
    """

    def __init__(
        self,
        handler: DevClusterHandler,
        *,
        verb: str | None,
        resource: str | None,
        subresource: str | None,
        group: str | None,
        namespace: str | None,
        name: str | None,
        client: str | None,
        status: int,
        reason: str,
        message: str | None,
        details: JsonDict | None,
        retry_after: int | None,
        hang: bool,
        times: int | None,
    ) -> None:
        self._handler = handler
        self.verb = verb
        self.resource = resource
        self.subresource = subresource
        self.group = group
        self.namespace = namespace
        self.name = name
        self.client = client
        self.status = status
        self.reason = reason
        self.message = message
        self.details = details
        self.retry_after = retry_after
        self.hang = hang
        self.times = times
        self._hits = 0
        self._waiting = 0
        self._removed = False

    def __repr__(self) -> str:
        what = "hang" if self.hang else f"{self.status} {self.reason}"
        scope = f"{self.verb or '*'} {self.resource or '*'}{'/' + self.subresource if self.subresource else ''}"
        return f"<Fault {scope}: {what}, hits={self.hits}{', removed' if self.removed else ''}>"

    @property
    def hits(self) -> int:
        """Requests this fault has answered (or is holding, for ``hang``)."""
        with self._handler._guard:
            return self._hits

    @property
    def waiting(self) -> int:
        """Requests a ``hang`` fault is holding unanswered right now."""
        with self._handler._guard:
            return self._waiting

    @property
    def active(self) -> bool:
        """Whether the fault still matches new requests (not removed, ``times`` not used up)."""
        with self._handler._guard:
            return self._matching()

    @property
    def removed(self) -> bool:
        with self._handler._guard:
            return self._removed

    def remove(self) -> None:
        """Stop matching; requests a ``hang`` fault holds are then served normally."""
        self._handler.remove_fault(self)

    # Called with the handler's guard held.
    def _matching(self) -> bool:
        return not self._removed and (self.times is None or self._hits < self.times)

    def _matches(self, verb: str, path: _Path, agent: str) -> bool:
        if not self._matching():
            return False
        if self.verb is not None and self.verb != verb:
            return False
        if self.resource is not None:
            if self.resource != path.plural:
                return False
            if self.subresource != "*" and self.subresource != path.subresource:
                return False
        elif self.subresource not in (None, "*") and self.subresource != path.subresource:
            return False
        return (
            (self.group is None or self.group == path.group)
            and (self.namespace is None or self.namespace == (path.namespace or ""))
            and (self.name is None or self.name == path.name)
            and (self.client is None or self.client == agent)
        )

    def _error(self, path: _Path, body: bytes) -> ApiError:
        name = path.name or _object_name(body)  # a create names its object in the body
        if self.message is not None:
            message = self.message
        elif name:
            message = f'{path.resource} "{name}": injected fault ({self.reason})'
        else:
            message = f"{path.resource}: injected fault ({self.reason})"
        details = self.details
        if details is None:
            details = {"kind": path.plural}
            if path.group:
                details["group"] = path.group
            if name:
                details["name"] = name
            if self.retry_after is not None:
                details["retryAfterSeconds"] = self.retry_after
        return ApiError(self.status, self.reason, message, _clone(details), retry_after=self.retry_after)


class _Signal:
    """A control message in a watcher's queue (not an event): "expire", "drop" or "shutdown"."""

    def __init__(self, name: str, message: str = "") -> None:
        self.name = name
        self.message = message

    def __repr__(self) -> str:
        return f"<{self.name}>"


#: Open watches are cut off without a proper end (FakeCluster.drop_watches).
_DROP = _Signal("drop")
#: The server is shutting down: streams end cleanly.
_SHUTDOWN = _Signal("shutdown")


class _Dropped(Exception):
    """A watch stream is to be cut off abruptly."""


def _object_name(body: bytes) -> str | None:
    try:
        name = json.loads(body)["metadata"]["name"]
    except (ValueError, KeyError, TypeError):
        return None
    return name if isinstance(name, str) else None


def _agent(request: aiohttp.web.BaseRequest) -> str:
    """The client as a User-Agent names it (its product: "tokensync", "kubectl", "OpenAPI-Generator")."""
    return request.headers.get("User-Agent", "").split("/")[0].strip()


# --------------------------------------------------------------------------------------------
# JSON helpers: cloning and patching.
# --------------------------------------------------------------------------------------------


def _clone(value: Any) -> Any:
    # Objects are plain JSON; a JSON round-trip is faster than copy.deepcopy for them.
    return json.loads(json.dumps(value))


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()  # compact, as the apiserver writes it


def _flag(params: Mapping[str, str], name: str) -> bool:
    return params.get(name, "") in _TRUE_FLAGS


def merge_patch(target: Any, patch: Any) -> Any:
    """Apply an RFC 7386 merge patch; returns a new value and never mutates the target."""
    if not isinstance(patch, dict):
        return _clone(patch)
    result: JsonDict = _clone(target) if isinstance(target, dict) else {}
    _merge_into(result, patch)
    return result


def _merge_into(result: JsonDict, patch: JsonDict) -> None:
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            current = result.get(key)
            if not isinstance(current, dict):
                current = result[key] = {}
            _merge_into(current, value)
        else:
            result[key] = _clone(value)


class JsonPatchError(ValueError):
    """A JSON patch cannot be applied (a failed test, a missing path, a malformed op)."""


def _pointer(path: Any) -> list[str]:
    if not isinstance(path, str) or (path and not path.startswith("/")):
        raise JsonPatchError(f"invalid JSON pointer: {path!r}")
    return [token.replace("~1", "/").replace("~0", "~") for token in path.split("/")[1:]] if path else []


def _index(container: list[Any], token: str, *, allow_end: bool) -> int:
    if token == "-" and allow_end:
        return len(container)
    if not re.fullmatch(r"0|[1-9][0-9]*", token):
        raise JsonPatchError(f"invalid array index: {token!r}")
    index = int(token)
    if index > len(container) or (index == len(container) and not allow_end):
        raise JsonPatchError(f"array index out of range: {index}")
    return index


def _resolve(doc: Any, tokens: list[str]) -> Any:
    for token in tokens:
        if isinstance(doc, dict):
            if token not in doc:
                raise JsonPatchError(f"path not found: /{'/'.join(tokens)}")
            doc = doc[token]
        elif isinstance(doc, list):
            doc = doc[_index(doc, token, allow_end=False)]
        else:
            raise JsonPatchError(f"path not found: /{'/'.join(tokens)}")
    return doc


def _add(doc: Any, tokens: list[str], value: Any) -> Any:
    if not tokens:
        return value
    parent = _resolve(doc, tokens[:-1])
    if isinstance(parent, dict):
        parent[tokens[-1]] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, tokens[-1], allow_end=True), value)
    else:
        raise JsonPatchError(f"cannot add to a scalar at /{'/'.join(tokens)}")
    return doc


def _remove(doc: Any, tokens: list[str]) -> Any:
    if not tokens:
        raise JsonPatchError("cannot remove the root")
    parent = _resolve(doc, tokens[:-1])
    if isinstance(parent, dict):
        if tokens[-1] not in parent:
            raise JsonPatchError(f"path not found: /{'/'.join(tokens)}")
        return parent.pop(tokens[-1])
    if isinstance(parent, list):
        return parent.pop(_index(parent, tokens[-1], allow_end=False))
    raise JsonPatchError(f"path not found: /{'/'.join(tokens)}")


def json_patch(doc: Any, ops: Any) -> Any:
    """Apply an RFC 6902 JSON patch; returns a new value and never mutates the document."""
    if not isinstance(ops, list):
        raise JsonPatchError("a JSON patch must be a list of operations")
    result = _clone(doc)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op:
            raise JsonPatchError(f"malformed operation: {op!r}")
        kind = op["op"]
        tokens = _pointer(op.get("path"))
        if kind in ("add", "replace", "test") and "value" not in op:
            raise JsonPatchError(f"missing value in {op!r}")
        if kind == "test":
            if _resolve(result, tokens) != op["value"]:
                raise JsonPatchError(f"test failed at {op['path']!r}")
        elif kind == "add":
            result = _add(result, tokens, _clone(op["value"]))
        elif kind == "remove":
            _remove(result, tokens)
        elif kind == "replace":
            if tokens:
                _remove(result, tokens)
            result = _add(result, tokens, _clone(op["value"]))
        elif kind in ("move", "copy"):
            source = _pointer(op.get("from"))
            value = _remove(result, source) if kind == "move" else _clone(_resolve(result, source))
            result = _add(result, tokens, value)
        else:
            raise JsonPatchError(f"unknown operation: {kind!r}")
    return result


# --------------------------------------------------------------------------------------------
# Content negotiation: whole objects, or metadata only (PartialObjectMetadata).
# --------------------------------------------------------------------------------------------

_PARTIAL = "PartialObjectMetadata"
_PARTIAL_LIST = "PartialObjectMetadataList"
_TABLE = "Table"
_JSON_MEDIA_TYPES = frozenset({"application/json", "application/*", "*/*"})
_META_GROUP_VERSIONS = frozenset({"meta.k8s.io/v1", "meta.k8s.io/v1beta1"})


@dataclass(frozen=True)
class _View:
    """How objects are rendered: whole (no kind), or as ``meta.k8s.io`` PartialObjectMetadata(List)."""

    kind: str = ""  # "", _PARTIAL, _PARTIAL_LIST or _TABLE
    api_version: str = ""  # "meta.k8s.io/v1" or "meta.k8s.io/v1beta1"


_FULL = _View()


def _not_acceptable(message: str) -> ApiError:
    return ApiError(406, "NotAcceptable", message)


@functools.lru_cache(maxsize=256)
def _negotiate(accept: str, tables: bool = False) -> _View:
    """The view for an Accept header: its first media type this server can serve, as the apiserver picks it.

    Like the apiserver, negotiation does not know whether the request is for a list: a mismatch
    (e.g. PartialObjectMetadataList on a GET of one object) fails later, in :func:`_present`.
    Only JSON is served: YAML and protobuf media types are skipped. ``as=Table`` is served with
    ``tables`` (custom resources: see :attr:`ResourceDecl.printer_columns`), and skipped otherwise.
    """
    ranges: list[tuple[float, bool, bool, str, dict[str, str]]] = []
    for item in accept.split(","):
        mime, *parts = (part.strip() for part in item.split(";"))
        params = {key.strip(): value.strip() for key, _, value in (part.partition("=") for part in parts)}
        try:
            quality = float(params.pop("q", "1"))
        except ValueError:
            quality = 1.0
        if mime and quality > 0:
            main, _, sub = mime.lower().partition("/")
            ranges.append((-quality, main == "*", sub == "*", mime.lower(), params))
    # The best quality first, wildcards after specific types; a stable sort keeps the client's order.
    ranges.sort(key=lambda r: r[:3])
    conversion_asked = False
    for *_, mime, params in ranges:
        kind = params.get("as")
        conversion_asked = conversion_asked or kind is not None
        if mime not in _JSON_MEDIA_TYPES:
            continue
        if kind is None:
            return _FULL
        group_version = f"{params.get('g')}/{params.get('v')}"
        if kind in (_PARTIAL, _PARTIAL_LIST) and group_version in _META_GROUP_VERSIONS:
            return _View(kind, group_version)
        if kind == _TABLE and tables and group_version in _META_GROUP_VERSIONS:
            return _View(kind, group_version)
    if conversion_asked:
        raise _not_acceptable("only the following media types are accepted: application/json")
    return _FULL  # lenient for plain YAML or protobuf requests: JSON, as before


def _as_partial(obj: JsonDict, api_version: str) -> JsonDict:
    # No copy: stored objects are replaced on writes, never mutated, so their metadata can be shared.
    return {"kind": _PARTIAL, "apiVersion": api_version, "metadata": obj.get("metadata", {})}


def _present(result: JsonDict, view: _View, *, is_list: bool) -> JsonDict:
    """A response body in the negotiated view; 406 if the view does not fit (as the apiserver does)."""
    if not view.kind:
        return result
    if view.kind != (_PARTIAL_LIST if is_list else _PARTIAL):
        shape = "is a list" if is_list else "is not a list"
        raise _not_acceptable(f"you requested {view.kind}, but the requested object {shape}")
    if not is_list:
        return _as_partial(result, view.api_version)
    items = [_as_partial(item, view.api_version) for item in result["items"]]
    return {"kind": _PARTIAL_LIST, "apiVersion": view.api_version, "metadata": result["metadata"], "items": items}


_INCLUDE_OBJECT = ("", "Metadata", "None", "Object")


def _as_table(
    result: JsonDict, view: _View, decl: ResourceDecl, params: Mapping[str, str], *, is_list: bool
) -> JsonDict:
    """A response as the meta.k8s.io Table kubectl asks for (the CRD tableconvertor, then the apiserver's asTable).

    Rows carry the object as ``?includeObject=`` says: its metadata (``PartialObjectMetadata``, the
    default), the whole object (``Object``), or nothing (``None``).
    """
    columns = decl.table_columns
    if columns is None:
        raise _not_acceptable("only the following media types are accepted: application/json")
    include = params.get("includeObject", "")
    if include not in _INCLUDE_OBJECT:
        raise _bad_request(
            f"Unable to convert to Table as requested: includeObject: Invalid value: {json.dumps(include)}: "
            "must be 'Metadata', 'Object', 'None', or empty"
        )
    now = datetime.datetime.now(datetime.UTC)
    rows: list[JsonDict] = []
    for obj in result.get("items") or [] if is_list else [result]:
        name = (obj.get("metadata") or {}).get("name", "")
        cells = [name, *(column.cell(obj, now) for column in columns)]
        row_object = obj if include == "Object" else None if include == "None" else _as_partial(obj, view.api_version)
        rows.append({"cells": cells, "object": row_object})
    source = result.get("metadata") or {}
    meta = {key: source[key] for key in ("resourceVersion", "continue", "remainingItemCount") if source.get(key)}
    return {
        "kind": _TABLE,
        "apiVersion": view.api_version,
        "metadata": meta,
        "columnDefinitions": [NAME_COLUMN_DEFINITION, *(column.definition() for column in columns)],
        "rows": rows,
    }


# --------------------------------------------------------------------------------------------
# Selectors.
# --------------------------------------------------------------------------------------------

_LABEL_KEY = r"[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?"
_LABEL_VALUE = r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_SET_RE = re.compile(rf"\s*(?P<key>{_LABEL_KEY})\s+(?P<op>in|notin)\s*\((?P<values>[^)]*)\)\s*")
_CMP_RE = re.compile(rf"\s*(?P<key>{_LABEL_KEY})\s*(?P<op>==|=|!=|>|<)\s*(?P<value>{_LABEL_VALUE})\s*")
_EXISTS_RE = re.compile(rf"\s*(?P<op>!?)\s*(?P<key>{_LABEL_KEY})\s*")


@dataclass(frozen=True)
class LabelRequirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!", ">", "<"
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        match self.op:
            case "exists":
                return present
            case "!":
                return not present
            case "=" | "in":
                return present and value in self.values
            case "!=" | "notin":
                return not present or value not in self.values
            case _:  # ">" and "<" compare integers, as the apiserver does
                try:
                    left, right = int(value or ""), int(next(iter(self.values)))
                except ValueError:
                    return False
                return left > right if self.op == ">" else left < right


def _split_top_level(text: str) -> list[str]:
    # Commas inside "in (a,b)" do not separate requirements.
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for char in text:
        depth += char == "("
        depth -= char == ")"
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [part for part in parts if part.strip()]


def parse_label_selector(text: str) -> list[LabelRequirement]:
    requirements: list[LabelRequirement] = []
    for part in _split_top_level(text):
        if m := _SET_RE.fullmatch(part):
            values = frozenset(v.strip() for v in m["values"].split(",") if v.strip())
            requirements.append(LabelRequirement(m["key"], m["op"], values))
        elif m := _CMP_RE.fullmatch(part):
            op = "=" if m["op"] == "==" else m["op"]
            if op in (">", "<") and not re.fullmatch(r"-?[0-9]+", m["value"]):
                raise _bad_request(f"unable to parse requirement: {part!r}: not an integer")
            requirements.append(LabelRequirement(m["key"], op, frozenset({m["value"]})))
        elif m := _EXISTS_RE.fullmatch(part):
            requirements.append(LabelRequirement(m["key"], "!" if m["op"] else "exists"))
        else:
            raise _bad_request(f"unable to parse requirement: {part!r}")
    return requirements


@dataclass(frozen=True)
class FieldRequirement:
    path: tuple[str, ...]
    equal: bool
    value: str

    def matches(self, obj: JsonDict) -> bool:
        current: Any = obj
        for key in self.path:
            current = current.get(key) if isinstance(current, dict) else None
        if isinstance(current, bool):
            text = "true" if current else "false"
        else:
            text = "" if current is None else str(current)
        return (text == self.value) == self.equal


def parse_field_selector(text: str) -> list[FieldRequirement]:
    requirements: list[FieldRequirement] = []
    for part in text.split(","):
        if not part.strip():
            continue
        m = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)\s*(==|=|!=)\s*(.*?)\s*", part)
        if not m:
            raise _bad_request(f"invalid field selector: {part!r}")
        requirements.append(FieldRequirement(tuple(m[1].split(".")), m[2] != "!=", m[3]))
    return requirements


@dataclass(frozen=True)
class _Filter:
    """Which objects a list, watch or deletecollection sees."""

    namespace: str | None
    labels: tuple[LabelRequirement, ...] = ()
    fields: tuple[FieldRequirement, ...] = ()

    @classmethod
    def from_params(cls, namespace: str | None, params: Mapping[str, str], name: str | None = None) -> _Filter:
        fields = parse_field_selector(params.get("fieldSelector", ""))
        if name is not None:  # a watch on a named URL is a watch with a name field selector
            fields.append(FieldRequirement(("metadata", "name"), True, name))
        labels = parse_label_selector(params.get("labelSelector", ""))
        return cls(namespace, tuple(labels), tuple(fields))

    def matches(self, obj: JsonDict | None) -> bool:
        if obj is None:
            return False
        meta = obj.get("metadata", {})
        if self.namespace is not None and meta.get("namespace") != self.namespace:
            return False
        labels = meta.get("labels") or {}
        return all(r.matches(labels) for r in self.labels) and all(r.matches(obj) for r in self.fields)


# --------------------------------------------------------------------------------------------
# Storage.
# --------------------------------------------------------------------------------------------

_Key = tuple[str, str]  # (namespace or "" for cluster-scoped, name)


@dataclass(eq=False)
class _Event:
    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    obj: JsonDict
    old: JsonDict | None  # the previous state, to see objects entering/leaving selectors
    _json: dict[_View, bytes] = field(default_factory=dict)

    def json_as(self, view: _View) -> bytes:
        # Serialised once per event and view, however many watchers stream it.
        body = self._json.get(view)
        if body is None:
            body = self._json[view] = _dumps(_present(self.obj, view, is_list=False))
        return body


@dataclass(eq=False)
class _Watcher:
    filter: _Filter
    view: _View = _FULL
    #: None: the server is shutting down; a _Signal: expire or drop the stream.
    queue: asyncio.Queue[_Event | _Signal | None] = field(default_factory=asyncio.Queue)
    agent: str = ""  # the client's User-Agent product (a freeze may be for one client only)

    def translate(self, event: _Event) -> str | None:
        """The event type as this watcher sees it (None if it does not see it at all)."""
        now = self.filter.matches(event.obj)
        if event.type != "MODIFIED":
            return event.type if now else None
        before = self.filter.matches(event.old)
        if now:
            return "MODIFIED" if before else "ADDED"
        return "DELETED" if before else None


@dataclass(eq=False)
class _ResourceState:
    decl: ResourceDecl
    log_size: int
    objects: dict[_Key, JsonDict] = field(default_factory=dict)
    log: collections.deque[_Event] = field(default_factory=collections.deque)
    floor_rv: int = 0  # the newest resourceVersion dropped from the log; older watches get 410
    watchers: set[_Watcher] = field(default_factory=set)


@dataclass(frozen=True)
class _Call:
    """A resource request as served by :class:`DevClusterHandler` (bypassing kmock's parser)."""

    raw: aiohttp.web.BaseRequest
    method: str
    params: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class _Path:
    """A resource URL, split as the apiserver's RequestInfoFactory splits it."""

    group: str
    version: str
    namespace: str | None
    plural: str
    name: str | None
    subresource: str | None

    @property
    def resource(self) -> str:
        return f"{self.plural}/{self.subresource}" if self.subresource else self.plural


def _parse_path(path: str) -> _Path | None:
    """Split a resource URL; None for discovery and other non-resource URLs."""
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 3 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 4 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    namespace: str | None = None
    # "/namespaces/x/secrets" is namespaced; "/namespaces/x/status" is the Namespace's subresource.
    if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] not in ("status", "finalize"):
        namespace, rest = rest[1], rest[2:]
    if len(rest) > 3:
        raise _no_such_path()
    name = rest[1] if len(rest) > 1 else None
    subresource = rest[2] if len(rest) > 2 else None
    return _Path(group, version, namespace, rest[0], name, subresource)


@dataclass(frozen=True)
class _Target:
    state: _ResourceState
    namespace: str | None
    name: str | None
    subresource: str | None


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _field_manager(request: _Call) -> str:
    """Who a write is recorded for: ``?fieldManager=``, else the User-Agent's product, as the apiserver does."""
    manager = request.params.get("fieldManager") or request.raw.headers.get("User-Agent", "").split("/")[0]
    return "".join(char for char in manager if char.isprintable())[:128] or "unknown"


def _managed_fields(obj: JsonDict, old: JsonDict | None, manager: str, subresource: str | None) -> list[JsonDict]:
    """``metadata.managedFields`` after an Update by ``manager``: its own entry is renewed, others are kept.

    Field ownership is not tracked (clients are expected to strip managedFields anyway):
    ``fieldsV1`` only names the top-level fields of what was written.
    """
    owned = ["status"] if subresource == "status" else [k for k in obj if k not in ("apiVersion", "kind", "status")]
    entry: JsonDict = {
        "manager": manager,
        "operation": "Update",
        "apiVersion": obj["apiVersion"],
        "time": _now(),
        "fieldsType": "FieldsV1",
        "fieldsV1": {f"f:{key}": {} for key in sorted(owned)},
    }
    if subresource:
        entry["subresource"] = subresource

    def identity(e: JsonDict) -> tuple[str, ...]:  # the time and the fields do not tell entries apart
        return tuple(str(e.get(k, "")) for k in ("operation", "manager", "apiVersion", "subresource"))

    entries = [e for e in (old or {}).get("metadata", {}).get("managedFields") or [] if identity(e) != identity(entry)]
    entries.append(entry)
    # The apiserver keeps them sorted by operation, time, manager, apiVersion, subresource.
    return sorted(entries, key=lambda e: (e.get("operation", ""), e.get("time", ""), *identity(e)[1:]))


def _encode_continue(list_rv: int, after: _Key) -> str:
    # The apiserver's token format: unpadded URL-safe base64 of the list's revision and its last key.
    token = json.dumps({"v": "meta.k8s.io/v1", "rv": list_rv, "start": "/".join(after)})
    return base64.urlsafe_b64encode(token.encode()).decode().rstrip("=")


def _decode_continue(token: str) -> tuple[int, _Key]:
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except ValueError:  # also binascii.Error, UnicodeDecodeError, and non-ASCII tokens
        data = None
    if not (
        isinstance(data, dict)
        and data.get("v") == "meta.k8s.io/v1"
        and isinstance(data.get("rv"), int)
        and isinstance(data.get("start"), str)
        and "/" in data["start"]
    ):
        raise _bad_request(f"continue key is not valid: {token!r}")
    namespace, _, name = data["start"].partition("/")
    return data["rv"], (namespace, name)


def _owner_uids(obj: JsonDict) -> set[str]:
    refs = obj.get("metadata", {}).get("ownerReferences") or []
    return {ref["uid"] for ref in refs if isinstance(ref, dict) and isinstance(ref.get("uid"), str)}


def _meta(obj: JsonDict, decl: ResourceDecl, name: str | None) -> JsonDict:
    meta = obj.get("metadata")
    if meta is None:
        meta = obj["metadata"] = {}
    if not isinstance(meta, dict):
        raise _invalid(decl, name, "metadata must be an object")
    return meta


def _fold_string_data(decl: ResourceDecl, obj: JsonDict) -> None:
    # The apiserver stores a Secret's write-only stringData base64-encoded into data.
    if decl.group == "" and decl.plural == "secrets" and "stringData" in obj:
        data = dict(obj.get("data") or {})
        for key, value in (obj.pop("stringData") or {}).items():
            data[key] = base64.b64encode(str(value).encode()).decode()
        obj["data"] = data


# --------------------------------------------------------------------------------------------
# Validation: the apiserver's checks that operators most often trip over.
# --------------------------------------------------------------------------------------------

_DNS_LABEL_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_QUALIFIED_NAME_RE = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_CONFIG_KEY_RE = re.compile(r"[-._a-zA-Z0-9]+")
_MAX_DATA_SIZE = 1024 * 1024  # Secrets and ConfigMaps
_MAX_ANNOTATIONS_SIZE = 256 * 1024
_MAX_REQUEST_BODY = 3 * 1024 * 1024


def _is_dns_label(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= 63 and bool(_DNS_LABEL_RE.fullmatch(value))


def _is_dns_subdomain(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= 253 and bool(_DNS_SUBDOMAIN_RE.fullmatch(value))


def _is_qualified_name(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    prefix, slash, name = value.rpartition("/")
    if slash and not _is_dns_subdomain(prefix):
        return False
    return len(name) <= 63 and bool(_QUALIFIED_NAME_RE.fullmatch(name))


def _validate(decl: ResourceDecl, obj: JsonDict, old: JsonDict | None) -> None:
    """Raise 422 Invalid (or 400 for undecodable data) like the apiserver's validation would."""
    causes: list[tuple[str, str]] = []
    meta = obj["metadata"]
    name = meta.get("name")
    if old is None:
        if decl.group == "" and decl.plural == "namespaces":
            if not _is_dns_label(name):
                causes.append(("metadata.name", f"Invalid value: {name!r}: must be a lowercase RFC 1123 label"))
        elif not _is_dns_subdomain(name):
            causes.append(("metadata.name", f"Invalid value: {name!r}: must be a lowercase RFC 1123 subdomain"))
        if decl.namespaced and not _is_dns_label(meta.get("namespace")):
            causes.append(
                ("metadata.namespace", f"Invalid value: {meta.get('namespace')!r}: must be an RFC 1123 label")
            )
    for kind in ("labels", "annotations"):
        mapping = meta.get(kind)
        if mapping is None:
            continue
        if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
            causes.append((f"metadata.{kind}", "Invalid value: must be a map of strings"))
            continue
        for key, value in mapping.items():
            if not _is_qualified_name(key):
                causes.append((f"metadata.{kind}", f"Invalid value: {key!r}: name part must be a qualified name"))
            if kind == "labels" and (len(value) > 63 or not re.fullmatch(rf"({_QUALIFIED_NAME_RE.pattern})?", value)):
                causes.append(
                    ("metadata.labels", f"Invalid value: {value!r}: a valid label must be 63 characters or less")
                )
        if kind == "annotations" and sum(len(k) + len(v) for k, v in mapping.items()) > _MAX_ANNOTATIONS_SIZE:
            causes.append(("metadata.annotations", "Too long: must have at most 262144 bytes"))
    for index, ref in enumerate(meta.get("ownerReferences") or []):
        if not isinstance(ref, dict) or not all(ref.get(k) for k in ("apiVersion", "kind", "name", "uid")):
            causes.append((f"metadata.ownerReferences[{index}]", "Required value: apiVersion, kind, name, uid"))
    for index, finalizer in enumerate(meta.get("finalizers") or []):
        if not _is_qualified_name(finalizer):
            causes.append((f"metadata.finalizers[{index}]", f"Invalid value: {finalizer!r}: must be a qualified name"))
    if decl.group == "" and decl.plural in ("secrets", "configmaps"):
        causes.extend(_validate_data(decl, obj, old))
    if causes:
        text = ", ".join(f"{field}: {message}" for field, message in causes)
        details = _details(decl, name if isinstance(name, str) else None)
        details["causes"] = [{"reason": "FieldValueInvalid", "field": f, "message": m} for f, m in causes]
        raise ApiError(422, "Invalid", f'{decl.kind} "{name}" is invalid: {text}', details)


def _validate_data(decl: ResourceDecl, obj: JsonDict, old: JsonDict | None) -> list[tuple[str, str]]:
    causes: list[tuple[str, str]] = []
    size = 0
    for section in ("data", "binaryData") if decl.plural == "configmaps" else ("data",):
        # A Secret's data and a ConfigMap's binaryData are base64 on the wire ([]byte in Go).
        base64_values = decl.plural == "secrets" or section == "binaryData"
        values = obj.get(section) or {}
        if not isinstance(values, dict):
            raise _bad_request(f"{section} must be a map")
        for key, value in values.items():
            if len(key) > 253 or key in (".", "..") or not _CONFIG_KEY_RE.fullmatch(key):
                causes.append((f"{section}[{key}]", f"Invalid value: {key!r}: a valid config key must consist "
                               "of alphanumeric characters, '-', '_' or '.'"))  # fmt: skip
            if not isinstance(value, str):
                raise _bad_request(f"{section}[{key}] must be a string")
            if base64_values:
                try:
                    size += len(base64.b64decode(value, validate=True))
                except (binascii.Error, ValueError):
                    raise _bad_request(f"{section}[{key}]: illegal base64 data") from None
            else:
                size += len(value.encode())
    if decl.plural == "configmaps" and set(obj.get("data") or {}) & set(obj.get("binaryData") or {}):
        causes.append(("data", "Invalid value: duplicate keys in data and binaryData"))
    if size > _MAX_DATA_SIZE:
        causes.append(("data", "Too long: must have at most 1048576 bytes"))
    if old is not None and old.get("immutable"):
        for section in ("data", "binaryData", "immutable"):
            if obj.get(section) != old.get(section):
                causes.append((section, "Forbidden: field is immutable when `immutable` is set"))
    if decl.plural == "secrets":
        obj.setdefault("type", "Opaque")
        if old is not None and obj["type"] != old.get("type", "Opaque"):
            causes.append(("type", "Invalid value: field is immutable"))
    return causes


def _without(obj: JsonDict, keys: Iterable[str]) -> JsonDict:
    return {k: v for k, v in obj.items() if k not in keys}


def _discovery_order(entries: list[Any]) -> list[Any]:
    """Discovery entries as the apiserver lists them: each resource, then its subresources.

    Subresources have no short names or categories there (kmock copies the resource's): with them,
    kubectl warns that "cc" could also mean clientcredentials/status.
    """
    groups: dict[str, list[Any]] = {}
    for entry in entries:
        if not isinstance(entry, dict) or "name" not in entry:
            groups.setdefault("", []).append(entry)
            continue
        plural, slash, _ = str(entry["name"]).partition("/")
        if slash:
            entry = {k: v for k, v in entry.items() if k not in ("shortNames", "categories")}
        groups.setdefault(plural, []).append(entry)
    return [
        entry
        for group in groups.values()
        for entry in sorted(group, key=lambda e: ("/" in str(e.get("name", "")), str(e.get("name", ""))))
    ]


@attrs.define(kw_only=True)
class DevClusterHandler(kmock.KubernetesEmulator):
    """kmock's Kubernetes emulator with faithful resource semantics (see the module docstring)."""

    declarations: tuple[ResourceDecl, ...] = DEFAULT_RESOURCES
    event_log_size: int = 10_000
    bookmark_interval: float = 10.0
    request_log_limit: int = 100

    _states: dict[tuple[str, str, str], _ResourceState] = attrs.field(factory=dict, init=False)
    _rv: int = attrs.field(default=1, init=False)
    _uids: dict[str, tuple[_ResourceState, _Key]] = attrs.field(factory=dict, init=False)
    _dependents: dict[str, set[tuple[_ResourceState, _Key]]] = attrs.field(factory=dict, init=False)
    # Mutations happen in the server's loop without awaits; the lock is for readers in other threads.
    _guard: threading.RLock = attrs.field(factory=threading.RLock, init=False)
    _writes: collections.Counter[tuple[str, str]] = attrs.field(factory=collections.Counter, init=False)
    # All resource requests by (verb, group, resource, namespace), as an audit log names them.
    _calls: collections.Counter[tuple[str, str, str, str]] = attrs.field(factory=collections.Counter, init=False)
    # Requests naming one object by (verb, resource, namespace, name): a create names it in its body.
    _object_calls: collections.Counter[tuple[str, str, str, str]] = attrs.field(factory=collections.Counter, init=False)
    # Watch connections opened per plural: lets tests see that clients really reconnected.
    watch_connections: collections.Counter[str] = attrs.field(factory=collections.Counter, init=False)
    # Fault injection: matched in order; the first active match answers.
    _faults: list[Fault] = attrs.field(factory=list, init=False)
    # A freeze holds requests and watch streams (of one client, or all) until the thaw.
    _frozen: bool = attrs.field(default=False, init=False)
    _freeze_client: str | None = attrs.field(default=None, init=False)
    _thawed: asyncio.Event = attrs.field(factory=asyncio.Event, init=False)
    # Set on shutdown: nothing is held any more.
    _closing: bool = attrs.field(default=False, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._thawed.set()
        for decl in self.declarations:
            key = (decl.group, decl.version, decl.plural)
            if key in self._states:
                raise ValueError(f"Resource declared twice: {decl}")
            self._states[key] = _ResourceState(decl, self.event_log_size)
            # kmock serves the API discovery from these; kopf reads verbs & subresources there.
            self.resources[kmock.resource(decl.group, decl.version, decl.plural)] = kmock.ResourceInfo(
                namespaced=decl.namespaced,
                kind=decl.kind,
                singular=decl.singular or decl.kind.lower(),
                shortnames=set(decl.shortnames),
                categories=set(decl.categories),
                subresources=set(decl.subresources),
                verbs=set(_MAIN_VERBS),
            )

    @override
    async def _serve_version(self, request: kmock.Request) -> kmock.Payload:
        payload = await super()._serve_version(request)
        # kmock says "/v1" for the core group; the apiserver says "v1".
        if isinstance(payload, dict) and str(payload.get("groupVersion", "")).startswith("/"):
            payload["groupVersion"] = payload["groupVersion"][1:]
        if isinstance(payload, dict) and isinstance(payload.get("resources"), list):
            payload["resources"] = _discovery_order(payload["resources"])
        return payload

    # ----- thread-safe inspection (used by FakeCluster) -----

    def inspect_get(self, group_version: str, plural: str, namespace: str | None, name: str) -> JsonDict | None:
        state = self._state_by_gv(group_version, plural)
        with self._guard:
            obj = state.objects.get((namespace or "", name))
            return cast(JsonDict, _clone(obj)) if obj is not None else None

    def inspect_list(self, group_version: str, plural: str, namespace: str | None) -> list[JsonDict]:
        state = self._state_by_gv(group_version, plural)
        with self._guard:
            objs = [obj for (ns, _), obj in sorted(state.objects.items()) if namespace is None or ns == namespace]
            return cast(list[JsonDict], _clone(objs))

    def write_counts(self) -> dict[tuple[str, str], int]:
        with self._guard:
            return dict(self._writes)

    def request_counts(self) -> dict[tuple[str, str, str, str], int]:
        """All resource requests by (verb, group, resource, namespace) since the last reset."""
        with self._guard:
            return dict(self._calls)

    def object_request_counts(self, namespace: str | None, name: str) -> dict[tuple[str, str], int]:
        """Requests naming one object, by (verb, resource), since the last reset."""
        with self._guard:
            return {
                (verb, resource): n
                for (verb, resource, ns, obj), n in self._object_calls.items()
                if ns == (namespace or "") and obj == name
            }

    def reset_counts(self) -> None:
        with self._guard:
            self._writes.clear()
            self._calls.clear()
            self._object_calls.clear()

    def close_watches(self) -> None:
        """End every open watch stream and release held requests (on shutdown: aiohttp waits for open handlers).

        Call it in the server's loop.
        """
        with self._guard:
            self._closing = True
            for state in self._states.values():
                for watcher in state.watchers:
                    watcher.queue.put_nowait(None)
        self._thawed.set()

    def open_watches(self, plural: str | None = None) -> int:
        """Watch streams open right now (of one resource, or all)."""
        with self._guard:
            return sum(len(s.watchers) for s in self._states.values() if plural is None or s.decl.plural == plural)

    # ----- fault injection: add/remove from any thread; freeze, thaw and signals in the server's loop -----

    def add_fault(self, fault: Fault) -> None:
        with self._guard:
            self._faults.append(fault)

    def remove_fault(self, fault: Fault) -> None:
        with self._guard:
            fault._removed = True
            with contextlib.suppress(ValueError):
                self._faults.remove(fault)

    def clear_faults(self) -> None:
        with self._guard:
            for fault in self._faults:
                fault._removed = True
            self._faults.clear()

    def faults(self) -> list[Fault]:
        with self._guard:
            return list(self._faults)

    def _take_fault(self, verb: str, path: _Path, agent: str) -> Fault | None:
        with self._guard:
            for fault in self._faults:
                if fault._matches(verb, path, agent):
                    fault._hits += 1
                    if not fault.hang and not fault._matching():
                        self._faults.remove(fault)  # used up (a hang fault stays: it holds requests until removed)
                    return fault
        return None

    async def _hang(self, fault: Fault) -> None:
        """Hold a request until the fault is removed (then it is served) or the server stops."""
        with self._guard:
            fault._waiting += 1
        try:
            while True:
                with self._guard:
                    if fault._removed:
                        return
                if self._closing:
                    raise ApiError(503, "ServiceUnavailable", "the server is shutting down")
                await asyncio.sleep(0.02)
        finally:
            with self._guard:
                fault._waiting -= 1

    @property
    def frozen(self) -> bool:
        with self._guard:
            return self._frozen

    def freeze(self, client: str | None = None) -> None:
        """Hold every request and watch stream (of ``client``'s User-Agent product only, if given)."""
        with self._guard:
            self._frozen, self._freeze_client = True, client
        self._thawed.clear()

    def thaw(self) -> None:
        with self._guard:
            self._frozen, self._freeze_client = False, None
        self._thawed.set()

    def _freezes(self, agent: str) -> bool:
        with self._guard:
            return self._frozen and not self._closing and self._freeze_client in (None, agent)

    async def _hold(self, agent: str) -> bool:
        """Wait while frozen for this client; whether it waited."""
        held = False
        while self._freezes(agent):
            held = True
            await self._thawed.wait()
        return held

    def signal_watches(self, plural: str, group: str | None, kind: str) -> int:
        """Expire (410) or drop the open watches of a resource; returns how many."""
        count = 0
        with self._guard:
            for state in self._states.values():
                if state.decl.plural != plural or (group is not None and state.decl.group != group):
                    continue
                if kind == "expire":
                    # As after an etcd compaction: what a client saw so far is too old to resume from.
                    state.floor_rv = max(state.floor_rv, self._rv)
                    signal = _Signal("expire", f"too old resource version: the watch cache starts at {self._rv}")
                else:
                    signal = _DROP
                for watcher in state.watchers:
                    watcher.queue.put_nowait(signal)
                    count += 1
                state.watchers.clear()  # they see no further events
        return count

    def _state_by_gv(self, group_version: str, plural: str) -> _ResourceState:
        group, _, version = group_version.rpartition("/")
        try:
            return self._states[(group, version, plural)]
        except KeyError:
            raise KeyError(f"Undeclared resource: {group_version} {plural}") from None

    # ----- request routing -----

    @override
    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        # Resource requests are served here wholesale, before kmock sees them: kmock's URL parser
        # fails on some Kubernetes URLs (e.g. "/api/v1/namespaces"), and its reaction matching
        # re-filters the whole request log on every request, so it slows down quadratically.
        try:
            if raw_request.path == _REQUESTS_PATH:  # never frozen nor faulted: tests read counts through it
                return self._serve_request_counts(raw_request.method.upper())
            agent = _agent(raw_request)
            path = _parse_path(raw_request.path)
            if path is None:  # discovery & non-resource URLs: kmock serves them
                await self._hold(agent)
                # Keep kmock's request log short so that its matching stays cheap.
                if len(self._requests) > self.request_log_limit:
                    del self._requests[: -self.request_log_limit]
                # The kubernetes client adds trailing slashes ("/apis/"); kmock matches exact paths.
                if len(raw_request.path) > 1 and raw_request.path.endswith("/"):
                    raw_request = raw_request.clone(rel_url=raw_request.rel_url.with_path(raw_request.path.rstrip("/")))
                return await super().__call__(raw_request)
            method, params = raw_request.method.upper(), dict(raw_request.query)
            # Counted first: requests for undeclared resources, faulted and held ones count too.
            verb = self._count(method, path, params)
            body = await raw_request.read()
            name = path.name or (_object_name(body) if verb == "create" else None)
            if name:
                with self._guard:
                    self._object_calls[(verb, path.resource, path.namespace or "", name)] += 1
            await self._hold(agent)
            fault = self._take_fault(verb, path, agent)
            if fault is not None:
                if not fault.hang:
                    if method in _WRITE_METHODS:
                        with self._guard:
                            self._writes[(path.resource, method)] += 1
                    raise fault._error(path, body)
                await self._hang(fault)  # removed: served as if nothing happened
            call = _Call(raw_request, method, params, body)
            return await self._serve(call, self._target(path))
        except ApiError as e:
            headers = {"Retry-After": str(e.retry_after)} if e.retry_after is not None else None
            return aiohttp.web.json_response(e.body(), status=e.code, headers=headers)

    def _count(self, method: str, path: _Path, params: Mapping[str, str]) -> str:
        """Count a resource request; returns its verb as an audit log names it."""
        verb = _METHOD_VERBS.get(method, method.lower())
        if verb == "get" and _flag(params, "watch"):
            verb = "watch"
        elif verb == "get" and path.name is None:
            verb = "list"
        elif verb == "delete" and path.name is None:
            verb = "deletecollection"
        with self._guard:
            self._calls[(verb, path.group, path.resource, path.namespace or "")] += 1
        return verb

    def _serve_request_counts(self, method: str) -> aiohttp.web.StreamResponse:
        """``GET`` the request counts (for readers in other processes); ``DELETE`` resets all counts."""
        if method == "DELETE":
            self.reset_counts()
        elif method != "GET":
            raise ApiError(405, "MethodNotAllowed", f"the server does not allow this method ({method})")
        keys = ("verb", "group", "resource", "namespace")
        rows = [dict(zip(keys, key, strict=True), count=n) for key, n in sorted(self.request_counts().items())]
        return aiohttp.web.json_response({"requests": rows})

    def _target(self, path: _Path) -> _Target:
        state = self._states.get((path.group, path.version, path.plural))
        if state is None:
            raise _no_such_path()
        namespace, name, subresource = path.namespace, path.name, path.subresource
        if state.decl.namespaced != (namespace is not None) and (name is not None or not state.decl.namespaced):
            raise _no_such_path()  # a named namespaced object needs a namespace; cluster ones have none
        if subresource is not None and subresource not in state.decl.subresources:
            raise _no_such_path()
        return _Target(state, namespace, name, subresource)

    async def _serve(self, request: _Call, target: _Target) -> aiohttp.web.StreamResponse:
        method = request.method
        decl = target.state.decl
        if method in _WRITE_METHODS:
            plural = f"{decl.plural}/{target.subresource}" if target.subresource else decl.plural
            with self._guard:
                self._writes[(plural, method)] += 1
        params = request.params
        name = target.name
        view = _negotiate(request.raw.headers.get("Accept", ""), decl.printer_columns is not None)
        manager = _field_manager(request)
        if decl.namespaced and target.namespace is None and method != "GET":
            raise ApiError(405, "MethodNotAllowed", f"{method} needs a namespace for {decl.qualified_name}")
        if method == "GET" and _flag(params, "watch"):
            return await self._watch(request, target, params, view)
        result: JsonDict
        status = 200
        with self._guard:
            if method == "GET" and name is None:
                result = self._list(target.state, _Filter.from_params(target.namespace, params), params)
            elif method == "GET" and name is not None:
                result = self._get(target.state, target.namespace, name)
            elif method == "POST" and name is None:
                result = self._create(target.state, target.namespace, self._body(request, dict), manager)
                status = 201
            elif method == "PUT" and name is not None:
                body = self._body(request, dict)
                result = self._write(target, name, lambda _: body, manager)
            elif method == "PATCH" and name is not None:
                result = self._write(target, name, self._patcher(request, decl, name), manager)
            elif method == "DELETE" and name is not None:
                options = self._body(request, dict, optional=True) or {}
                result = self._delete(target.state, (target.namespace or "", name), options, params)
            elif method == "DELETE":
                options = self._body(request, dict, optional=True) or {}
                selection = _Filter.from_params(target.namespace, params)
                result = self._delete_collection(target.state, selection, options, params)
            else:
                raise ApiError(405, "MethodNotAllowed", f"the server does not allow this method ({method})")
        # Serialised outside the lock: stored objects are replaced on writes, never mutated.
        is_list = name is None and method in ("GET", "DELETE")
        if view.kind == _TABLE:
            body = _as_table(result, view, decl, params, is_list=is_list)
        else:
            body = _present(result, view, is_list=is_list)
        return aiohttp.web.Response(body=_dumps(body), status=status, content_type="application/json")

    @staticmethod
    def _body(request: _Call, kind: type, *, optional: bool = False) -> Any:
        if not request.body.strip() and optional:
            return None
        try:
            body = json.loads(request.body)
        except ValueError:
            raise _bad_request("the request body is not valid JSON") from None
        if not isinstance(body, kind):
            raise _bad_request(f"the request body must be a JSON {kind.__name__}")
        return body

    def _patcher(self, request: _Call, decl: ResourceDecl, name: str) -> Callable[[JsonDict], Any]:
        content_type = request.raw.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type == "application/json-patch+json":
            ops = self._body(request, list)

            def apply_json(current: JsonDict) -> JsonDict:
                try:
                    patched = json_patch(current, ops)
                except JsonPatchError as e:
                    raise _invalid(decl, name, f"the JSON patch could not be applied: {e}") from None
                if not isinstance(patched, dict):
                    raise _invalid(decl, name, "the patched object is not a JSON object")
                return patched

            return apply_json
        if content_type in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
            patch = self._body(request, dict)
            return lambda current: merge_patch(current, patch)
        raise ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format: {content_type}")

    # ----- reads -----

    def _get(self, state: _ResourceState, namespace: str | None, name: str) -> JsonDict:
        obj = state.objects.get((namespace or "", name))
        if obj is None:
            raise _not_found(state.decl, name)
        return obj

    def _list(self, state: _ResourceState, selection: _Filter, params: Mapping[str, str]) -> JsonDict:
        list_rv, start = self._rv, None
        if token := params.get("continue"):
            if params.get("resourceVersion") not in (None, "", "0"):
                raise _bad_request("specifying resource version is not allowed when using continue")
            list_rv, start = _decode_continue(token)
            if list_rv < state.floor_rv:  # as etcd after a compaction: the client must list anew
                message = "The provided continue parameter is too old to display a consistent list result."
                raise ApiError(410, "Expired", f"{message} You can start a new list without the continue parameter.")
        try:
            limit = int(params.get("limit") or 0)
        except ValueError:
            raise _bad_request("limit must be an integer") from None
        if params.get("resourceVersion") == "0" and not token:
            limit = 0  # served from the apiserver's watch cache, which ignores limit (client-go's first list)
        # etcd lists by key, i.e. by namespace, then name; a page continues after the last key.
        # Later pages see the current objects, not a snapshot at list_rv: close enough for informers.
        keys = sorted(k for k in state.objects if start is None or k > start)
        items = [obj for key in keys if selection.matches(obj := state.objects[key])]
        meta: JsonDict = {"resourceVersion": str(list_rv)}
        if 0 < limit < len(items):
            last = items[limit - 1]["metadata"]
            meta["continue"] = _encode_continue(list_rv, (last.get("namespace", ""), last["name"]))
            if not selection.labels and not selection.fields:  # etcd counts exactly only without selectors
                meta["remainingItemCount"] = len(items) - limit
            items = items[:limit]
        decl = state.decl
        return {"kind": f"{decl.kind}List", "apiVersion": decl.group_version, "metadata": meta, "items": items}

    # ----- writes -----

    def _next_rv(self) -> int:
        self._rv += 1
        return self._rv

    def _record(self, state: _ResourceState, etype: str, obj: JsonDict, old: JsonDict | None) -> None:
        event = _Event(int(obj["metadata"]["resourceVersion"]), etype, obj, old)
        if len(state.log) >= state.log_size:
            state.floor_rv = state.log.popleft().rv
        state.log.append(event)
        for watcher in state.watchers:
            watcher.queue.put_nowait(event)

    def _store(self, state: _ResourceState, key: _Key, obj: JsonDict) -> None:
        state.objects[key] = obj
        self._uids[obj["metadata"]["uid"]] = (state, key)
        # Stale index entries are harmless: the collector re-checks the current ownerReferences.
        for owner in _owner_uids(obj):
            self._dependents.setdefault(owner, set()).add((state, key))

    def _create(self, state: _ResourceState, namespace: str | None, obj: JsonDict, manager: str) -> JsonDict:
        decl = state.decl
        meta = _meta(obj, decl, None)
        if decl.namespaced:
            if meta.get("namespace") not in (None, "", namespace):
                raise _bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        name = meta.get("name")
        if not name:
            prefix = meta.get("generateName")
            if not prefix or not isinstance(prefix, str):
                raise _invalid(decl, None, "metadata.name: Required value: name or generateName is required")
            while True:
                name = prefix + "".join(secrets.choice(_NAME_SUFFIX_ALPHABET) for _ in range(5))
                if (namespace or "", name) not in state.objects:
                    break
            meta["name"] = name
        if not isinstance(name, str):
            raise _invalid(decl, None, "metadata.name must be a string")
        key = (namespace or "", name)
        if key in state.objects:
            raise ApiError(409, "AlreadyExists", f'{decl.qualified_name} "{name}" already exists', _details(decl, name))
        for meta_key in (*_SERVER_OWNED_META, "resourceVersion", "selfLink", "managedFields"):
            meta.pop(meta_key, None)
        obj = {"apiVersion": decl.group_version, "kind": decl.kind, **obj}
        _fold_string_data(decl, obj)
        if decl.has_status:
            obj.pop("status", None)  # the status is written via /status only
        _validate(decl, obj, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = _now()
        meta["resourceVersion"] = str(self._next_rv())
        if decl.generation:
            meta["generation"] = 1
        meta["managedFields"] = _managed_fields(obj, None, manager, None)
        self._store(state, key, obj)
        self._record(state, "ADDED", obj, None)
        return obj

    def _write(self, target: _Target, name: str, change: Callable[[JsonDict], Any], manager: str) -> JsonDict:
        """PUT or PATCH an object (or its status): ``change`` maps the current object to the desired one."""
        state, decl = target.state, target.state.decl
        key = (target.namespace or "", name)
        old = state.objects.get(key)
        if old is None:
            raise _not_found(decl, name)
        desired = change(old)
        if not isinstance(desired, dict):
            raise _bad_request("the object must be a JSON object")
        wanted_meta = _meta(desired, decl, name)
        wanted_rv = wanted_meta.get("resourceVersion")
        if wanted_rv not in (None, "") and str(wanted_rv) != old["metadata"]["resourceVersion"]:
            raise _conflict(decl, name)
        if wanted_meta.get("name", name) != name:
            raise _bad_request(f"the name of the object ({wanted_meta.get('name')}) does not match the URL ({name})")

        new: JsonDict
        if target.subresource == "status":
            # Only the status changes via /status; everything else is kept as stored.
            new = _without(old, ("status",))
            new["metadata"] = dict(old["metadata"])
            if desired.get("status") is not None:
                new["status"] = desired["status"]
        else:
            new = desired
            new["apiVersion"], new["kind"] = decl.group_version, decl.kind
            if decl.has_status:  # the status changes via /status only
                new.pop("status", None)
                if "status" in old:
                    new["status"] = old["status"]
            _fold_string_data(decl, new)
            meta = new["metadata"]
            # managedFields too: the server records writes itself (a client cannot reset them here).
            for meta_key in (*_SERVER_OWNED_META, "managedFields", "name", "namespace"):
                meta.pop(meta_key, None)
                if meta_key in old["metadata"]:
                    meta[meta_key] = old["metadata"][meta_key]
            if old["metadata"].get("deletionTimestamp"):
                added = set(meta.get("finalizers") or []) - set(old["metadata"].get("finalizers") or [])
                if added:
                    raise _invalid(decl, name, "metadata.finalizers: Forbidden: no new finalizers can be added "
                                   "if the object is being deleted")  # fmt: skip
            _validate(decl, new, old)
        new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
        if new == old:
            return old  # a no-op write: no new resourceVersion, no watch event (as in a real apiserver)

        if decl.generation and target.subresource is None:
            ignored = ("metadata", "status") if decl.has_status else ("metadata",)
            if _without(new, ignored) != _without(old, ignored):
                new["metadata"]["generation"] = old["metadata"].get("generation", 0) + 1
        new["metadata"]["managedFields"] = _managed_fields(new, old, manager, target.subresource)
        new["metadata"]["resourceVersion"] = str(self._next_rv())
        self._store(state, key, new)
        self._record(state, "MODIFIED", new, old)
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
            return self._remove(state, key, orphan=False)
        return new

    def _delete(self, state: _ResourceState, key: _Key, options: JsonDict, params: Mapping[str, str]) -> JsonDict:
        decl = state.decl
        old = state.objects.get(key)
        if old is None:
            raise _not_found(decl, key[1])
        preconditions = options.get("preconditions") or {}
        for field_name in ("uid", "resourceVersion"):
            wanted = preconditions.get(field_name)
            if wanted not in (None, "") and str(wanted) != old["metadata"].get(field_name):
                raise _conflict(decl, key[1])
        policy = options.get("propagationPolicy") or params.get("propagationPolicy")
        if old["metadata"].get("finalizers"):
            if old["metadata"].get("deletionTimestamp"):
                return old  # already being deleted: waiting for the finalizers
            new = _without(old, ("metadata",))
            new["metadata"] = dict(old["metadata"], deletionTimestamp=_now(), deletionGracePeriodSeconds=0)
            if decl.generation:  # the apiserver bumps the generation when the deletion starts
                new["metadata"]["generation"] = old["metadata"].get("generation", 0) + 1
            new["metadata"]["resourceVersion"] = str(self._next_rv())
            self._store(state, key, new)
            self._record(state, "MODIFIED", new, old)
            return new
        return self._remove(state, key, orphan=policy == "Orphan")

    def _delete_collection(
        self, state: _ResourceState, selection: _Filter, options: JsonDict, params: Mapping[str, str]
    ) -> JsonDict:
        deleted = [
            self._delete(state, key, options, params)
            for key, obj in sorted(state.objects.items())
            if selection.matches(obj)
        ]
        decl = state.decl
        meta = {"resourceVersion": str(self._rv)}
        return {"kind": f"{decl.kind}List", "apiVersion": decl.group_version, "metadata": meta, "items": deleted}

    def _remove(self, state: _ResourceState, key: _Key, *, orphan: bool) -> JsonDict:
        """Really delete an object (no finalizers left) and let the garbage collector see it."""
        old = state.objects.pop(key)
        uid = old["metadata"]["uid"]
        self._uids.pop(uid, None)
        final = _without(old, ("metadata",))
        final["metadata"] = dict(old["metadata"], resourceVersion=str(self._next_rv()))
        self._record(state, "DELETED", final, old)
        # Like the real garbage collector, collect dependents in the background, after the reply.
        collect = self._orphan_dependents if orphan else self._collect_dependents
        asyncio.get_running_loop().call_soon(collect, uid)
        return final

    def _dependents_of(self, owner_uid: str) -> Iterator[tuple[_ResourceState, _Key, JsonDict]]:
        for state, key in sorted(self._dependents.pop(owner_uid, set()), key=lambda sk: sk[1]):
            obj = state.objects.get(key)
            if obj is not None and owner_uid in _owner_uids(obj):
                yield state, key, obj

    def _collect_dependents(self, owner_uid: str) -> None:
        with self._guard:
            for state, key, obj in list(self._dependents_of(owner_uid)):
                # A dependent goes only when none of its owners exists any more.
                if not any(uid in self._uids for uid in _owner_uids(obj)):
                    with contextlib.suppress(ApiError):
                        self._delete(state, key, {}, {})

    def _orphan_dependents(self, owner_uid: str) -> None:
        with self._guard:
            for state, key, obj in list(self._dependents_of(owner_uid)):
                new = _without(obj, ("metadata",))
                refs = [r for r in obj["metadata"]["ownerReferences"] if r.get("uid") != owner_uid]
                new["metadata"] = dict(obj["metadata"], ownerReferences=refs, resourceVersion=str(self._next_rv()))
                if not refs:
                    del new["metadata"]["ownerReferences"]
                self._store(state, key, new)
                self._record(state, "MODIFIED", new, obj)

    # ----- watching -----

    async def _watch(
        self, request: _Call, target: _Target, params: Mapping[str, str], view: _View
    ) -> aiohttp.web.StreamResponse:
        state, decl = target.state, target.state.decl
        # A list view on a watch fails per event in the apiserver, which then sends whole objects.
        view = view if view.kind == _PARTIAL else _FULL
        watcher = _Watcher(
            _Filter.from_params(target.namespace, params, name=target.name), view, agent=_agent(request.raw)
        )
        bookmarks = _flag(params, "allowWatchBookmarks")
        rv_param = params.get("resourceVersion") or ""
        send_initial = _flag(params, "sendInitialEvents")
        try:
            timeout = float(params["timeoutSeconds"]) if "timeoutSeconds" in params else None
        except ValueError:
            raise _bad_request("timeoutSeconds must be a number") from None
        if timeout is None:  # the apiserver picks a random timeout of 30-60 minutes
            timeout = 1800.0 + secrets.randbelow(1800)

        lines: list[bytes] = []
        expired = False
        # Snapshot & subscribe atomically: no event can fall between the replay and the live stream.
        with self._guard:
            self.watch_connections[decl.plural] += 1
            if send_initial or rv_param in ("", "0"):
                for _, obj in sorted(state.objects.items()):
                    if watcher.filter.matches(obj):
                        lines.append(self._line("ADDED", _dumps(_present(obj, view, is_list=False))))
                if send_initial and bookmarks:
                    lines.append(self._bookmark(decl, view, initial_events_end=True))
            else:
                if not rv_param.isdigit():
                    raise _bad_request(f"invalid resourceVersion: {rv_param!r}")
                since = int(rv_param)
                if since < state.floor_rv:
                    expired = True
                else:
                    replay = list(self._events_since(state, since))
                    lines.extend(self._render(watcher, event) for event in replay if watcher.translate(event))
            if not expired:
                state.watchers.add(watcher)

        response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        try:
            await self._hold(watcher.agent)  # frozen since: the replay waits too
            await response.prepare(request.raw)
            if expired:
                error = ApiError(410, "Expired", f"too old resource version: {rv_param} ({state.floor_rv})")
                await response.write(self._line("ERROR", _dumps(error.body())))
            else:
                if lines:
                    await response.write(b"".join(lines))
                await self._stream(response, watcher, decl, timeout, bookmarks)
            await response.write_eof()
        except _Dropped:
            # Cut off mid-stream: no terminating chunk, as when a proxy or a node goes away.
            transport = request.raw.transport
            if transport is not None:
                transport.abort()
        except ConnectionError:
            pass  # the client went away
        finally:
            with self._guard:
                state.watchers.discard(watcher)
        return response

    async def _stream(
        self,
        response: aiohttp.web.StreamResponse,
        watcher: _Watcher,
        decl: ResourceDecl,
        lifetime: float,
        bookmarks: bool,
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + lifetime
        while True:
            await self._hold(watcher.agent)  # frozen: no event, no bookmark, no end until the thaw
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            wait = min(remaining, self.bookmark_interval) if bookmarks else remaining
            try:
                event = await asyncio.wait_for(watcher.queue.get(), timeout=wait)
            except TimeoutError:
                # After a freeze, events may be queued: they go first (the loop comes back here).
                if not await self._hold(watcher.agent) and bookmarks and wait < remaining:
                    await response.write(self._bookmark(decl, watcher.view))  # the closing one is below
                continue
            await self._hold(watcher.agent)
            # Drain what is already queued into one write: fewer syscalls under bursts.
            batch = [event]
            while not watcher.queue.empty():
                batch.append(watcher.queue.get_nowait())
            lines, stop = self._batch_lines(watcher, batch)
            if stop is _DROP:
                raise _Dropped
            if lines:
                await response.write(b"".join(lines))
            if stop is not None:  # expired or shutting down
                return
        if bookmarks:  # the apiserver sends a last bookmark before closing on timeout
            # It carries the newest resourceVersion: first send what is still queued, or a client
            # resuming from the bookmark would never see those events.
            pending: list[_Event | _Signal | None] = []
            while not watcher.queue.empty():
                pending.append(watcher.queue.get_nowait())
            lines, stop = self._batch_lines(watcher, pending)
            if stop is _DROP:
                raise _Dropped
            if stop is None:
                lines.append(self._bookmark(decl, watcher.view))
            await response.write(b"".join(lines))

    def _batch_lines(
        self, watcher: _Watcher, batch: list[_Event | _Signal | None]
    ) -> tuple[list[bytes], _Signal | None]:
        """The lines for queued items up to the first control item, and that item (None: none)."""
        lines: list[bytes] = []
        for item in batch:
            if item is None:
                return lines, _SHUTDOWN
            if isinstance(item, _Signal):
                if item.name == "expire":
                    error = ApiError(410, "Expired", item.message)
                    lines.append(self._line("ERROR", _dumps(error.body())))
                return lines, item
            if watcher.translate(item):
                lines.append(self._render(watcher, item))
        return lines, None

    @staticmethod
    def _events_since(state: _ResourceState, since: int) -> Iterator[_Event]:
        newer: list[_Event] = []
        for event in reversed(state.log):
            if event.rv <= since:
                break
            newer.append(event)
        return reversed(newer)

    @staticmethod
    def _line(etype: str, obj_json: bytes) -> bytes:
        return b'{"type":"' + etype.encode() + b'","object":' + obj_json + b"}\n"

    def _render(self, watcher: _Watcher, event: _Event) -> bytes:
        etype = watcher.translate(event)
        assert etype is not None
        return self._line(etype, event.json_as(watcher.view))

    def _bookmark(self, decl: ResourceDecl, view: _View, *, initial_events_end: bool = False) -> bytes:
        with self._guard:
            rv = self._rv  # all events up to it are already queued to every watcher
        meta: JsonDict = {"resourceVersion": str(rv)}
        if initial_events_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        obj = {"kind": decl.kind, "apiVersion": decl.group_version, "metadata": meta}
        return self._line("BOOKMARK", _dumps(_present(obj, view, is_list=False)))


# --------------------------------------------------------------------------------------------
# The threaded server.
# --------------------------------------------------------------------------------------------


class FakeCluster:
    """An in-memory Kubernetes API server on a real HTTP port, in its own thread & loop."""

    def __init__(
        self,
        resources: Iterable[ResourceDecl] = DEFAULT_RESOURCES,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        event_log_size: int = 10_000,
        bookmark_interval: float = 10.0,
    ) -> None:
        self._resources = tuple(resources)
        self._host = host
        self._port = port
        self._event_log_size = event_log_size
        self._bookmark_interval = bookmark_interval
        self._handler: DevClusterHandler | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}"

    @property
    def port(self) -> int:
        """The port served (the one picked if constructed with port 0)."""
        if self._handler is None:
            raise RuntimeError("The fake cluster is not started.")
        return self._port

    @property
    def handler(self) -> DevClusterHandler:
        """The kmock handler (for advanced use: kmock reactions, resources, request log)."""
        if self._handler is None:
            raise RuntimeError("The fake cluster is not started.")
        return self._handler

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("The fake cluster can be started only once.")
        self._thread = threading.Thread(target=self._run, name="devcluster", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            raise RuntimeError("The fake cluster failed to start.") from self._error

    def stop(self) -> None:
        if self._thread is None or self._loop is None or self._stopping is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is already closed
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(timeout=30)
        self._stopping = None

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as e:
            self._error = e
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        handler = DevClusterHandler(
            declarations=self._resources,
            event_log_size=self._event_log_size,
            bookmark_interval=self._bookmark_interval,
        )
        loop = asyncio.get_running_loop()

        def make_request(message: Any, payload: Any, protocol: Any, writer: Any, task: Any) -> aiohttp.web.BaseRequest:
            # aiohttp caps bodies at 1 MiB; the apiserver at 3 MiB (big Secrets reach validation).
            return aiohttp.web.BaseRequest(
                message, payload, protocol, writer, task, loop, client_max_size=_MAX_REQUEST_BODY
            )

        # Cancel the handlers of gone clients, so that abandoned watches do not pile up.
        server = aiohttp.web.Server(handler, request_factory=make_request, handler_cancellation=True, access_log=None)
        runner = aiohttp.web.ServerRunner(server, shutdown_timeout=1.0)
        await runner.setup()
        try:
            site = aiohttp.web.TCPSite(runner, self._host, self._port)
            await site.start()
            self._port = int(runner.addresses[0][1])
            async with handler:
                self._loop = asyncio.get_running_loop()
                self._stopping = asyncio.Event()
                self._handler = handler
                self._ready.set()
                await self._stopping.wait()
                handler.close_watches()
        finally:
            await runner.cleanup()

    def write_kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        """Write a kubeconfig (no auth) pointing at this server; returns the path."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "devcluster", "cluster": {"server": self.url}}],
            "users": [{"name": "devcluster", "user": {}}],
            "contexts": [
                {
                    "name": "devcluster",
                    "context": {"cluster": "devcluster", "user": "devcluster", "namespace": namespace},
                }
            ],
            "current-context": "devcluster",
        }
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def get(self, group_version: str, plural: str, namespace: str | None, name: str) -> JsonDict | None:
        """A deep copy of the stored object, or None if it does not exist."""
        return self.handler.inspect_get(group_version, plural, namespace, name)

    def list(self, group_version: str, plural: str, namespace: str | None = None) -> list[JsonDict]:
        """Deep copies of the stored objects (of all namespaces if ``namespace`` is None)."""
        return self.handler.inspect_list(group_version, plural, namespace)

    def write_counts(self) -> dict[tuple[str, str], int]:
        """Write requests per (plural, HTTP verb); status writes count as ``"plural/status"``."""
        return self.handler.write_counts()

    def request_counts(self) -> dict[tuple[str, str], int]:
        """All resource requests since the last reset, per (verb, resource), as an audit log names them.

        Verbs: get, list, watch, create, update, patch, delete, deletecollection.
        Resources: the plural, or ``"plural/subresource"`` (e.g. ``"clientcredentials/status"``).
        """
        counts: collections.Counter[tuple[str, str]] = collections.Counter()
        for (verb, _, resource, _), n in self.handler.request_counts().items():
            counts[(verb, resource)] += n
        return dict(counts)

    def object_request_counts(self, namespace: str | None, name: str) -> dict[tuple[str, str], int]:
        """Requests naming one object since the last reset, per (verb, resource) as in :meth:`request_counts`.

        A create names its object in the body; lists, watches and collection deletes name none.
        Objects of several resources may share the name: the resource tells them apart.
        """
        return self.handler.object_request_counts(namespace, name)

    def api_calls(self) -> set[tuple[str, str, str, str]]:
        """The distinct (verb, group, resource, namespace) requested since the last reset (for RBAC checks).

        The namespace is "" for cluster-scoped resources and requests across all namespaces.
        """
        return set(self.handler.request_counts())

    def reset_counts(self) -> None:
        """Reset the request and write counts."""
        self.handler.reset_counts()

    # ----- fault injection -----

    def inject(
        self,
        verb: str | None = None,
        resource: str | None = None,
        *,
        status: int = 500,
        reason: str | None = None,
        message: str | None = None,
        times: int | None = None,
        namespace: str | None = None,
        name: str | None = None,
        subresource: str | None = None,
        group: str | None = None,
        client: str | None = None,
        hang: bool = False,
        retry_after: int | None = None,
        details: JsonDict | None = None,
    ) -> Fault:
        """Make matching resource requests fail; returns the fault's handle (``.hits``, ``.remove()``).

        Matching (``None``: any): ``verb`` as an audit log names it (get, list, watch, create, update,
        patch, delete, deletecollection), ``resource`` the plural (``"secrets"``; ``"clientcredentials/status"``
        is short for ``subresource="status"``), ``subresource`` (``None``: the main resource only,
        unless ``resource`` is ``None`` too; ``"*"``: any), ``group``, ``namespace``, ``name``, and
        ``client``, the User-Agent's product (``"tokensync"`` for the operator).

        The answer is a ``Status`` body as the apiserver writes it (kind Status, status Failure,
        ``message``, ``reason`` — by default the apiserver's reason for ``status`` —, ``details``,
        ``code``), with a ``Retry-After`` header when ``retry_after`` is given. With ``hang=True``
        the request is accepted and never answered until the fault is removed (it is then served
        normally) or the cluster stops. ``times`` limits how many requests it catches. Faults are
        matched in the order they were injected; faulted requests count in ``request_counts()``.
        """
        if verb is not None and verb not in FAULT_VERBS:
            raise ValueError(f"unknown verb {verb!r}; expected one of {', '.join(sorted(FAULT_VERBS))}")
        if resource is not None and "/" in resource:
            if subresource is not None:
                raise ValueError("give the subresource either in resource ('plural/sub') or as subresource")
            resource, subresource = resource.split("/", 1)
        if not 400 <= status <= 599:
            raise ValueError("status must be an HTTP error status (400-599)")
        if times is not None and times < 1:
            raise ValueError("times must be at least 1")
        fault = Fault(
            self.handler,
            verb=verb,
            resource=resource,
            subresource=subresource,
            group=group,
            namespace=namespace,
            name=name,
            client=client,
            status=status,
            reason=reason or _DEFAULT_REASONS.get(status, "InternalError" if status >= 500 else "BadRequest"),
            message=message,
            details=details,
            retry_after=retry_after,
            hang=hang,
            times=times,
        )
        self.handler.add_fault(fault)
        return fault

    def faults(self) -> builtins.list[Fault]:
        """The injected faults not removed yet (used-up ``hang`` faults stay until removed)."""
        return self.handler.faults()

    def clear_faults(self) -> None:
        """Remove every fault (requests held by ``hang`` faults are then served)."""
        self.handler.clear_faults()

    def freeze(self, client: str | None = None) -> None:
        """Stop answering: every request (and every open watch stream) is held, connections stay open.

        New requests are accepted and counted, then wait; watch streams send no event, bookmark or
        end. :meth:`thaw` resumes normal service: held requests are served and the events that
        happened meanwhile are delivered. With ``client`` (a User-Agent product such as
        ``"tokensync"``) only that client is frozen, so a test can still change objects.
        The request counts (also over HTTP) and the inspection methods keep working.
        """
        self._in_loop(self.handler.freeze, client)

    def thaw(self) -> None:
        """End a :meth:`freeze`."""
        self._in_loop(self.handler.thaw)

    @property
    def frozen(self) -> bool:
        return self.handler.frozen

    def expire_watches(self, resource: str, group: str | None = None) -> int:
        """Open watches of ``resource`` (a plural) get an ERROR event with a ``410 Gone`` Status, then end.

        As after an etcd compaction, a new watch from a resourceVersion older than now also gets
        the 410 (a client must list again). Returns how many watches were expired.
        """
        return self._in_loop(self.handler.signal_watches, resource, group, "expire")

    def drop_watches(self, resource: str, group: str | None = None) -> int:
        """Cut the open watches of ``resource`` off abruptly (no end of the chunked stream); returns how many."""
        return self._in_loop(self.handler.signal_watches, resource, group, "drop")

    def open_watches(self, resource: str | None = None) -> int:
        """Watch streams open right now (of one resource, or all)."""
        return self.handler.open_watches(resource)

    def _in_loop(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run ``fn`` in the server's loop (asyncio objects are not thread-safe) and return its result."""
        loop = self._loop
        if loop is None or self._handler is None:
            raise RuntimeError("The fake cluster is not started.")
        if threading.current_thread() is self._thread:
            return fn(*args)
        done: concurrent.futures.Future[_T] = concurrent.futures.Future()

        def run() -> None:
            try:
                done.set_result(fn(*args))
            except BaseException as exc:
                done.set_exception(exc)

        loop.call_soon_threadsafe(run)
        result: _T = done.result(timeout=30)
        return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tokensync.dev.cluster", description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--kubeconfig", type=Path, help="write a kubeconfig pointing at the server")
    parser.add_argument("--port-file", type=Path, help="write the port here once serving (handy with --port 0)")
    args = parser.parse_args(argv)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with FakeCluster(host=args.host, port=args.port) as cluster:
        print(f"Serving a fake Kubernetes API at {cluster.url}", flush=True)
        if args.kubeconfig:
            cluster.write_kubeconfig(args.kubeconfig)
            print(f"Kubeconfig written to {args.kubeconfig}", flush=True)
        if args.port_file:
            # Written last and atomically: once a parent process sees it, everything is ready.
            args.port_file.parent.mkdir(parents=True, exist_ok=True)
            partial = args.port_file.with_name(f".{args.port_file.name}.tmp")
            partial.write_text(f"{cluster.port}\n")
            partial.replace(args.port_file)
        try:
            while not stop.wait(1.0):
                pass
        except KeyboardInterrupt:
            pass
    print("Stopped.", file=sys.stderr)


if __name__ == "__main__":
    main()
