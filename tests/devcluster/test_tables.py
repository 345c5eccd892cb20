"""The stand-in renders the Table ``kubectl get`` asks for as the apiserver does.

The Table tests written for a real apiserver (``tests/e2e/test_table_fidelity.py``) run here
against the stand-in, which declares their Widget CRD up front. The pieces of the rendering are
tested here one by one against the cases of their Go originals: apimachinery's HumanDuration
(duration_test.go), the CRD tableconvertor's cell formats (tableconvertor_test.go) and client-go's
JSONPath (jsonpath_test.go), plus the JSON shape, content negotiation and discovery around them.
"""

from __future__ import annotations

import datetime
import itertools
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from tests.e2e.test_api_fidelity import failed, ok

# The tests written for a real cluster run here against the stand-in too (pytest collects imported tests).
from tests.e2e.test_table_fidelity import (
    GROUP,
    KUBECTL_ACCEPT,
    TABLE_V1,
    WIDGETS_CRD,
    put_widgets,
    test_a_list_as_kubectl_asks_for_it_renders_every_column_type,  # noqa: F401
    test_one_object_pages_and_the_row_objects_as_asked,  # noqa: F401
)
from tests.integration.test_kubectl_table import kubectl_binary, table

from tokensync.dev.cluster import (
    DEFAULT_RESOURCES,
    FakeCluster,
    JsonPathError,
    PrinterColumn,
    ResourceDecl,
    execute_jsonpath,
    go_float,
    go_json,
    human_duration,
)

REPO = Path(__file__).resolve().parents[2]
COMMITTED_CRD = REPO / "crds" / "tokensync.io_clientcredentials.yaml"
NOW = datetime.datetime(2026, 3, 1, 12, 0, 0, tzinfo=datetime.UTC)
_counter = itertools.count()


@pytest.fixture(scope="module")
def cluster() -> Iterator[FakeCluster]:
    with FakeCluster([*DEFAULT_RESOURCES, ResourceDecl.from_crd(WIDGETS_CRD)]) as cluster:
        yield cluster


@pytest.fixture
def kube(cluster: FakeCluster) -> Iterator[httpx.Client]:
    headers = {"User-Agent": "fidelity-tests/1.0"}
    with httpx.Client(base_url=cluster.url, headers=headers, timeout=30, trust_env=False) as client:
        yield client


@pytest.fixture
def namespace(kube: httpx.Client) -> str:
    name = f"tables-{next(_counter)}"
    ok(kube.post("/api/v1/namespaces", json={"metadata": {"name": name}}), 201)
    return name


@pytest.fixture
def widgets() -> str:
    """The Widget CRD: declared to the stand-in when it starts (see ``cluster``)."""
    return str(WIDGETS_CRD["metadata"]["name"])


def cell(column_type: str, value: Any, now: datetime.datetime = NOW) -> Any:
    """The cell of a ``.spec.v`` column of this type for a resource whose ``spec.v`` is ``value``."""
    return PrinterColumn("V", column_type, ".spec.v").cell({"spec": {"v": value}}, now)


def ago(**delta: float) -> str:
    return (NOW - datetime.timedelta(**delta)).strftime("%Y-%m-%dT%H:%M:%SZ")


# ----- apimachinery's duration.HumanDuration: TestHumanDuration and TestHumanDurationBoundaries -----

SECOND, MINUTE, HOUR, DAY = (datetime.timedelta(seconds=n) for n in (1, 60, 3600, 86400))
MS, US = datetime.timedelta(milliseconds=1), datetime.timedelta(microseconds=1)
YEAR = 365 * DAY


@pytest.mark.parametrize(
    ("elapsed", "expected"),
    [
        (SECOND, "1s"),
        (70 * SECOND, "70s"),
        (190 * SECOND, "3m10s"),
        (70 * MINUTE, "70m"),
        (47 * HOUR, "47h"),
        (49 * HOUR, "2d1h"),
        ((8 * 24 + 2) * HOUR, "8d"),
        (367 * DAY, "367d"),
        (2 * YEAR + 25 * HOUR, "2y1d"),
        (8 * YEAR + 2 * HOUR, "8y"),
        # Boundaries; Go's -2s + 1ns is -2s + 1µs here (timedelta's resolution).
        (-2 * SECOND, "<invalid>"),
        (-2 * SECOND + US, "0s"),
        (datetime.timedelta(0), "0s"),
        (SECOND - MS, "0s"),
        (2 * MINUTE - MS, "119s"),
        (2 * MINUTE, "2m"),
        (2 * MINUTE + SECOND, "2m1s"),
        (10 * MINUTE - MS, "9m59s"),
        (10 * MINUTE, "10m"),
        (10 * MINUTE + SECOND, "10m"),
        (3 * HOUR - MS, "179m"),
        (3 * HOUR, "3h"),
        (3 * HOUR + MINUTE, "3h1m"),
        (8 * HOUR - MS, "7h59m"),
        (8 * HOUR, "8h"),
        (8 * HOUR + 59 * MINUTE, "8h"),
        (2 * DAY - MS, "47h"),
        (2 * DAY, "2d"),
        (2 * DAY + HOUR, "2d1h"),
        (8 * DAY - MS, "7d23h"),
        (8 * DAY, "8d"),
        (8 * DAY + 23 * HOUR, "8d"),
        (2 * YEAR - MS, "729d"),
        (2 * YEAR, "2y"),
        (2 * YEAR + 23 * HOUR, "2y"),
        (2 * YEAR + 23 * HOUR + 59 * MINUTE, "2y"),
        (2 * YEAR + DAY - MS, "2y"),
        (2 * YEAR + DAY, "2y1d"),
        (3 * YEAR, "3y"),
        (7 * YEAR, "7y"),
        (8 * YEAR - MS, "7y364d"),
        (8 * YEAR, "8y"),
        (8 * YEAR + 364 * DAY, "8y"),
        (9 * YEAR, "9y"),
    ],
)
def test_human_duration_as_apimachinery(elapsed: datetime.timedelta, expected: str) -> None:
    assert human_duration(elapsed) == expected


# ----- the tableconvertor's cells: Test_cellForJSONValue, and "string" columns printed by JSONPath -----


@pytest.mark.parametrize(
    ("column_type", "value", "expected"),
    [
        ("integer", 42, 42),
        ("integer", 3.14, 3),
        ("integer", True, None),
        ("integer", "foo", None),
        ("number", 42, 42),  # float64(42), which encoding/json writes as 42
        ("number", 3.14, 3.14),
        ("number", True, None),
        ("number", "foo", None),
        ("boolean", 42, None),
        ("boolean", 3.14, None),
        ("boolean", True, True),
        ("boolean", "foo", None),
        ("date", 42, None),
        ("date", 3.14, None),
        ("date", True, None),
        ("date", ago(hours=12, minutes=30), "12h"),
        ("date", (NOW + datetime.timedelta(hours=12, minutes=30)).strftime("%Y-%m-%dT%H:%M:%SZ"), "<invalid>"),
        ("date", "", "<unknown>"),
        # A string column prints whatever it finds, as `kubectl -o jsonpath` would.
        ("string", "foo", "foo"),
        ("string", 42, "42"),
        ("string", 3.14, "3.14"),
        ("string", 1e6, "1000000"),  # stored by Go as 1000000, read back as an integer
        ("string", 1e21, "1e+21"),
        ("string", 0.00001, "1e-05"),
        ("string", True, "true"),
        ("string", None, "<no value>"),
        ("string", [1, "a"], '[1,"a"]'),
        ("string", {"b": 1.5, "a": "<&>"}, '{"a":"\\u003c\\u0026\\u003e","b":1.5}'),
        ("string", {}, "{}"),
    ],
)
def test_cells_by_column_type(column_type: str, value: Any, expected: Any) -> None:
    assert cell(column_type, value) == expected


@pytest.mark.parametrize(
    ("timestamp", "expected"),
    [
        (ago(minutes=5), "5m"),
        (ago(minutes=5, seconds=30), "5m30s"),
        (ago(seconds=90), "90s"),
        (ago(days=3, hours=4), "3d4h"),
        ("2026-03-01T11:55:00.123456789Z", "4m59s"),  # fractional seconds
        ("2026-03-01T13:55:00+02:00", "5m"),  # an offset
        ("2026-03-01T06:55:00-05:00", "5m"),
        (ago(seconds=1), "1s"),
        ((NOW + SECOND).strftime("%Y-%m-%dT%H:%M:%SZ"), "0s"),  # up to 2 s ahead is "now" (clock skew)
        ((NOW + 2 * SECOND).strftime("%Y-%m-%dT%H:%M:%SZ"), "<invalid>"),
        ((NOW + 365 * DAY).strftime("%Y-%m-%dT%H:%M:%SZ"), "<invalid>"),
        ("null", "<unknown>"),
        ("0001-01-01T00:00:00Z", "<unknown>"),  # Go's zero time
        ("yesterday", "<invalid>"),
        ("2026-03-01", "<invalid>"),
        ("2026-03-01 11:55:00Z", "<invalid>"),
        ("2026-03-01t11:55:00z", "<invalid>"),
        ("2026-02-30T11:55:00Z", "<invalid>"),
        ("2026-03-01T24:00:00Z", "<invalid>"),
        ("2026-03-01T11:59:60Z", "<invalid>"),  # Go refuses leap seconds
    ],
)
def test_date_cells_are_the_time_since_and_a_future_time_is_invalid(timestamp: str, expected: str) -> None:
    assert cell("date", timestamp) == expected


def test_columns_with_several_values_show_the_first_one() -> None:
    """tableconvertor_test.go: "as we only support simple JSON path", one value per cell, the rest dropped."""
    obj = {"spec": {"servers": [{"hosts": ["foo"]}, {"hosts": ["bar", "baz"]}], "foo": [{"bar": [1]}, {"bar": [2, 3]}]}}
    paths = {"value": "[0].{}[0]", "single1": "[0].{}", "single2": "[1].{}", "multi": "[*].{}"}

    def cells(column_type: str, base: str, leaf: str) -> list[Any]:
        columns = [PrinterColumn(n, column_type, f".spec.{base}{p.format(leaf)}") for n, p in paths.items()]
        return [column.cell(obj, NOW) for column in columns]

    assert cells("string", "servers", "hosts") == ["foo", '["foo"]', '["bar","baz"]', '["foo"]']
    assert cells("string", "foo", "bar") == ["1", "[1]", "[2,3]", "[1]"]
    assert cells("integer", "foo", "bar") == [1, None, None, None]


def test_filters_as_in_printer_columns() -> None:
    conditions = [
        {"type": "Progressing", "status": "True", "reason": "Working"},
        {"type": "Ready", "status": "False", "reason": "InvalidCredentials", "count": 2},
    ]
    obj = {"status": {"conditions": conditions}}

    def column(path: str, column_type: str = "string") -> Any:
        return PrinterColumn("C", column_type, path).cell(obj, NOW)

    assert column('.status.conditions[?(@.type=="Ready")].status') == "False"
    assert column(".status.conditions[?(@.type=='Ready')].reason") == "InvalidCredentials"
    assert column('.status.conditions[?(@.type!="Ready")].reason') == "Working"
    assert column('.status.conditions[?(@.type=="Stalled")].status') is None  # no match: empty
    assert column(".status.conditions[?(@.count)].type") == "Ready"  # existence
    assert column(".status.conditions[?(@.count>1)].type") == "Ready"  # elements without the key are skipped
    assert column(".status.conditions[?(@.count==2)].count", "integer") == 2
    assert column(".status.conditions[?(@.count==2.0)].type") is None  # an int is not a float: an error, empty
    assert column(".status.conditions[?(@.count=='2')].type") is None  # nor a string
    assert column(".status.conditions[-1].type") == "Ready"
    assert column(".status.conditions[5].type") is None  # out of range: an error, empty
    assert column(".status.missing[?(@.type=='Ready')].status") is None
    assert column(".status[?(@.type=='Ready')].status") is None  # a map cannot be filtered
    assert PrinterColumn("C", "string", ".status.conditions[0].status").cell({}, NOW) is None


def test_jsonpath_as_client_go() -> None:
    """Cases of client-go's TestStructInput and friends (with maps for structs: their keys print sorted)."""
    store = {
        "Name": "jsonpath",
        "Book": [
            {"Category": "reference", "Author": "Nigel Rees", "Title": "Sayings of the Centurey", "Price": 8.95},
            {"Category": "fiction", "Author": "Evelyn Waugh", "Title": "Sword of Honour", "Price": 12.99},
            {"Category": "fiction", "Author": "Herman Melville", "Title": "Moby Dick", "Price": 8.99},
        ],
        "Bicycle": [
            {"Color": "red", "Price": 19.95, "IsNew": True},
            {"Color": "green", "Price": 20.01, "IsNew": False},
        ],
        "Labels": {"engieer": 10, "web/html": 15, "k8s-app": 20},
    }
    moby = '{"Author":"Herman Melville","Category":"fiction","Price":8.99,"Title":"Moby Dick"}'
    for template, data, expected in [
        ("hello jsonpath", None, "hello jsonpath"),
        ("{..}", [1, 2, 3], "[1,2,3]"),
        ("{[?(@<5)]}", [2, 6, 3, 7], "2 3"),
        ('{"{"}', None, "{"),
        ("{[1,3,4]}", [0, 1, 2, 3, 4], "1 3 4"),
        ("{[0:2]}", ["Monday", "Tudesday"], "Monday Tudesday"),
        ("hello {.Name}", store, "hello jsonpath"),
        ("{$.Labels.web/html}", store, "15"),
        ("{.Labels.k8s-app}", store, "20"),
        ("{.Bicycle[*].Color}", store, "red green"),
        ("{.Book[*].Author}", store, "Nigel Rees Evelyn Waugh Herman Melville"),
        ("{..Price}", store, "8.95 12.99 8.99 19.95 20.01"),
        ("{...Price}", store, "8.95 12.99 8.99 19.95 20.01"),
        ("{.Book[-1:]}", store, moby),
        ("{..Book[2]}", store, moby),
        ("{.Bicycle[?(@.IsNew==true)].Color}", store, "red"),
        ("{.Book[?(@.Price<9.0)].Title}", store, "Sayings of the Centurey Moby Dick"),
        ("{.Book[::2].Price}", store, "8.95 8.99"),
        ("{.Labels['k8s-app']}", store, "20"),
        ("{.hello}", store, ""),
        ("{.a} {.b}", {"a": None, "b": [None]}, "null [null]"),
        ("before-{.hello}after", store, "before-after"),
    ]:
        assert execute_jsonpath(template, data) == expected, template
    for template, error in [
        ("{hello}", "unrecognized identifier hello"),
        ("{.Labels[0]}", "is not array or slice"),
        ("{.Book[?(@.Price<>10)]}", "unrecognized filter operator <>"),
        ("{.Book[5]}", "array index out of bounds"),
        ("{.Book[?(@.Price<9)].Title}", "incompatible types for comparison"),  # a float is not an int
    ]:
        with pytest.raises(ValueError, match=error):
            execute_jsonpath(template, store)


@pytest.mark.parametrize(
    "path", [".a[?(@.b=='c')", '.a["b"]', ".a[x]", ".a{", '.a[?(@.b=="c)]', ".a[0:x]", ".a\t", "....a", ".x{range}"]
)
def test_printer_columns_that_do_not_parse_are_refused(path: str) -> None:
    with pytest.raises(JsonPathError):
        PrinterColumn("Bad", "string", path)


def test_printer_columns_are_checked_like_the_crd_validation() -> None:
    with pytest.raises(ValueError, match="type must be one of"):
        PrinterColumn("Bad", "duration", ".spec.x")
    with pytest.raises(ValueError, match=r"starting with \."):
        PrinterColumn("Bad", "string", "spec.x")


def test_go_number_and_json_formats() -> None:
    assert [go_float(x) for x in (1e6, 123456.0, 1234567.0, 0.0001, 0.00001, 1.5, -0.0, 1e21, 2.5e-10)] == [
        "1e+06",
        "123456",
        "1.234567e+06",
        "0.0001",
        "1e-05",
        "1.5",
        "-0",
        "1e+21",
        "2.5e-10",
    ]
    assert [go_float(x, json_style=True) for x in (1e6, 1e20, 1e21, 0.000001, 1e-7, 3.14)] == [
        "1000000",
        "100000000000000000000",
        "1e+21",
        "0.000001",
        "1e-7",
        "3.14",
    ]
    assert go_json({"b": [1, 2.5, None, True], "a": "<x&y>\u2028\n"}) == (
        '{"a":"\\u003cx\\u0026y\\u003e\\u2028\\n","b":[1,2.5,null,true]}'
    )


# ----- the ClientCredential's columns -----


def test_the_stand_in_knows_the_clientcredential_columns_of_the_committed_crd() -> None:
    [declared] = [d for d in DEFAULT_RESOURCES if d.group == "tokensync.io"]
    committed = ResourceDecl.from_crd(yaml.safe_load(COMMITTED_CRD.read_text()))
    assert declared == committed
    assert declared.printer_columns is not None
    assert [(c.name, c.type, c.priority) for c in declared.printer_columns] == [
        ("Ready", "string", 0),
        ("Reason", "string", 1),
        ("Secret", "string", 0),
        ("Expires", "string", 0),
        ("Renews", "string", 1),
        ("Age", "date", 0),
    ]
    assert (declared.kind, declared.shortnames, declared.categories) == (
        "ClientCredential",
        ("clientcred", "cc"),
        ("tokensync",),
    )


def test_a_clientcredential_row_shows_its_expiry_and_renewal_as_timestamps() -> None:
    [declared] = [d for d in DEFAULT_RESOURCES if d.group == "tokensync.io"]
    assert declared.table_columns is not None
    ready = {"type": "Ready", "status": "True", "reason": "TokenIssued"}
    obj = {
        "metadata": {"name": "orders", "creationTimestamp": ago(minutes=42)},
        "status": {
            "conditions": [{"type": "Reconciling", "status": "False", "reason": "UpToDate"}, ready],
            "secretName": "orders-token",
            "expiresAt": "2026-03-01T12:40:00Z",  # ahead: as a date column, this would read <invalid>
            "renewalTime": "2026-03-01T12:26:40Z",
        },
    }
    cells = [column.cell(obj, NOW) for column in declared.table_columns]
    assert cells == ["True", "TokenIssued", "orders-token", "2026-03-01T12:40:00Z", "2026-03-01T12:26:40Z", "42m"]
    fresh = {"metadata": {"name": "new", "creationTimestamp": ago(seconds=3)}}
    assert [column.cell(fresh, NOW) for column in declared.table_columns] == [None, None, None, None, None, "3s"]


# ----- over HTTP: the Table's shape, negotiation, built-in kinds, watches, discovery -----


def test_the_table_as_json(kube: httpx.Client, namespace: str) -> None:
    path = f"/apis/tokensync.io/v1alpha1/namespaces/{namespace}/clientcredentials"
    ok(kube.post(path, json={"metadata": {"name": "orders", "labels": {"team": "pay"}}, "spec": {}}), 201)
    status = {"secretName": "orders", "expiresAt": "2999-01-01T00:00:00Z", "renewalTime": "2998-12-31T23:00:00Z"}
    merge = {"Content-Type": "application/merge-patch+json"}
    stored = ok(kube.patch(f"{path}/orders/status", json={"status": status}, headers=merge))

    got = ok(kube.get(path, headers={"Accept": KUBECTL_ACCEPT}))

    assert list(got) == ["kind", "apiVersion", "metadata", "columnDefinitions", "rows"]  # metav1.Table's order
    assert got["metadata"] == {"resourceVersion": got["metadata"]["resourceVersion"]}
    assert got["columnDefinitions"][0]["description"].startswith("Name must be unique within a namespace.")
    assert got["columnDefinitions"][4] == {
        "name": "Expires",
        "type": "string",
        "format": "",
        "description": "Custom resource definition column (in JSONPath format): .status.expiresAt",
        "priority": 0,
    }
    [row] = got["rows"]
    assert list(row) == ["cells", "object"]
    assert row["cells"][:6] == ["orders", None, None, "orders", "2999-01-01T00:00:00Z", "2998-12-31T23:00:00Z"]
    assert row["object"] == {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": stored["metadata"],
    }


def test_built_in_kinds_answer_kubectl_with_whole_objects(kube: httpx.Client, namespace: str) -> None:
    """The stand-in has no built-in printers: kubectl falls back to its own NAME and AGE columns."""
    secrets = f"/api/v1/namespaces/{namespace}/secrets"
    ok(kube.post(secrets, json={"metadata": {"name": "s"}, "stringData": {"k": "v"}}), 201)
    listed = ok(kube.get(secrets, headers={"Accept": KUBECTL_ACCEPT}))
    assert (listed["kind"], [s["data"] for s in listed["items"]]) == ("SecretList", [{"k": "dg=="}])
    assert failed(kube.get(secrets, headers={"Accept": TABLE_V1}), 406)["reason"] == "NotAcceptable"


def test_a_watch_that_asks_for_a_table_streams_whole_objects(kube: httpx.Client, namespace: str, widgets: str) -> None:
    """As before: `kubectl get -w` would want Table events, which the stand-in does not render."""
    path = put_widgets(kube, namespace)
    params = {"watch": "1", "timeoutSeconds": "1"}
    with kube.stream("GET", path, params=params, headers={"Accept": KUBECTL_ACCEPT}) as response:
        events = [json.loads(line) for line in response.iter_lines() if line.strip()]
    assert [(e["type"], e["object"]["kind"]) for e in events] == [("ADDED", "Widget"), ("ADDED", "Widget")]


def test_bad_include_object_after_a_write_and_tables_of_writes(kube: httpx.Client, namespace: str) -> None:
    """The apiserver renders every response in the view asked for, writes included."""
    path = f"/apis/{GROUP}/v1/namespaces/{namespace}/widgets"
    body = {"metadata": {"name": "w"}, "spec": {"count": 1}}
    created = ok(kube.post(path, json=body, headers={"Accept": TABLE_V1}), 201)
    assert (created["kind"], created["rows"][0]["cells"][:3]) == ("Table", ["w", None, 1])
    deleted = ok(kube.delete(f"{path}/w", headers={"Accept": TABLE_V1}, params={"includeObject": "None"}))
    assert deleted["rows"] == [{"cells": deleted["rows"][0]["cells"], "object": None}]


def test_discovery_lists_a_resource_before_its_subresources_which_have_no_short_names(kube: httpx.Client) -> None:
    resources = ok(kube.get("/apis/tokensync.io/v1alpha1"))["resources"]
    assert [r["name"] for r in resources] == ["clientcredentials", "clientcredentials/status"]
    main, status = resources
    assert (sorted(main["shortNames"]), main["categories"]) == (["cc", "clientcred"], ["tokensync"])
    assert "shortNames" not in status
    assert "categories" not in status


def test_kubectl_prints_every_column_type(
    cluster: FakeCluster, namespace: str, kube: httpx.Client, tmp_path: Path
) -> None:
    kubectl = kubectl_binary()
    put_widgets(kube, namespace)
    kubeconfig = cluster.write_kubeconfig(tmp_path / "kubeconfig", namespace=namespace)
    argv = [str(kubectl), "--kubeconfig", str(kubeconfig), "--cache-dir", str(tmp_path / "cache"), "get", "widgets"]

    plain = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)
    wide = subprocess.run([*argv, "-o", "wide"], capture_output=True, text=True, timeout=60, check=True)

    assert plain.stderr == wide.stderr == ""
    assert plain.stdout.splitlines()[0].split() == [
        "NAME",
        "READY",
        "COUNT",
        "RATIO",
        "ENABLED",
        "STARTED",
        "LAST",
        "AGE",
    ]
    a, b = table(wide.stdout)
    assert list(a) == ["NAME", "READY", "COUNT", "RATIO", "ENABLED", "STARTED", "DEADLINE", "VALUE", "LAST", "AGE"]
    assert list(a.values())[:-1] == [
        "a",
        "False",
        "3",
        "0.5",
        "true",
        "30m",
        "<invalid>",
        '{"a":"\\u003cx\\u003e","b":1}',
        "y",
    ]
    assert list(b.values())[:-1] == ["b", "", "2", "4", "", "<invalid>", "", "2.5", ""]
