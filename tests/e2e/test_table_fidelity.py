"""What ``kubectl get`` prints for a custom resource: the Table the apiserver renders from a CRD's printer columns.

kubectl asks for ``application/json;as=Table;v=v1;g=meta.k8s.io`` and prints the cells it gets
back; for a custom resource the apiserver computes them from the CRD's additionalPrinterColumns:
a Name column, then each column's JSONPath (client-go's, missing keys allowed), formatted by the
column's type (a "date" becomes the time since it, ``<invalid>`` for a future one).

Checked here against a real kube-apiserver (v1.30+) with a throwaway CRD, ``widgets.fidelity.tokensync.io``,
whose columns cover every type; ``tests/devcluster/test_tables.py`` imports these tests and runs them
against the API stand-in, which knows the CRD through ``ResourceDecl.from_crd(WIDGETS_CRD)``. Each
module provides the fixtures ``kube``, ``namespace`` and ``widgets`` (the CRD, established).

Skipped, with the reason, when no cluster is reachable. Run with e.g.
``KUBECONFIG=~/.kube/kind pytest tests/e2e/test_table_fidelity.py``.
"""

from __future__ import annotations

import datetime
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.test_api_fidelity import failed, kube, namespace, ok  # noqa: F401 (fixtures)

JsonDict = dict[str, Any]

pytestmark = pytest.mark.e2e

GROUP = "fidelity.tokensync.io"
#: kubectl's Accept header for `kubectl get` (a Table, v1 or v1beta1, or else the object).
KUBECTL_ACCEPT = (
    "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
)
TABLE_V1 = "application/json;as=Table;v=v1;g=meta.k8s.io"
TABLE_V1BETA1 = "application/json;as=Table;v=v1beta1;g=meta.k8s.io"

WIDGETS_CRD: JsonDict = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"widgets.{GROUP}"},
    "spec": {
        "group": GROUP,
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "additionalPrinterColumns": [
                    {"name": "Ready", "type": "string", "jsonPath": '.spec.conditions[?(@.type=="Ready")].status'},
                    {"name": "Count", "type": "integer", "format": "int64", "jsonPath": ".spec.count"},
                    {"name": "Ratio", "type": "number", "jsonPath": ".spec.ratio"},
                    {"name": "Enabled", "type": "boolean", "jsonPath": ".spec.enabled"},
                    {"name": "Started", "type": "date", "jsonPath": ".spec.startedAt", "description": "Since when."},
                    {"name": "Deadline", "type": "date", "jsonPath": ".spec.deadline", "priority": 1},
                    {"name": "Value", "type": "string", "jsonPath": ".spec.value", "priority": 2},
                    {"name": "Last", "type": "string", "jsonPath": ".spec.items[-1]"},
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                ],
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {"spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
                    }
                },
            }
        ],
    },
}
COLUMNS = ["Name", "Ready", "Count", "Ratio", "Enabled", "Started", "Deadline", "Value", "Last", "Age"]
AGE = re.compile(r"\d{1,3}s")  # created during the test


def rfc3339(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture(scope="module")
def widgets(kube: httpx.Client) -> Iterator[str]:  # noqa: F811 (the fixture imported above)
    """The Widget CRD, created for this module and deleted after it."""
    crds = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    name = WIDGETS_CRD["metadata"]["name"]
    kube.delete(f"{crds}/{name}")  # left over from an interrupted run
    deadline = time.monotonic() + 60
    while kube.get(f"{crds}/{name}").status_code != 404:
        assert time.monotonic() < deadline, "an old Widget CRD is not going away"
        time.sleep(0.5)
    ok(kube.post(crds, json=WIDGETS_CRD), 201)
    while True:
        conditions = ok(kube.get(f"{crds}/{name}")).get("status", {}).get("conditions", [])
        established = any(c["type"] == "Established" and c["status"] == "True" for c in conditions)
        if established and kube.get(f"/apis/{GROUP}/v1/widgets").status_code == 200:
            break
        assert time.monotonic() < deadline, "the Widget CRD is not established"
        time.sleep(0.5)
    yield name
    kube.delete(f"{crds}/{name}")


def put_widgets(kube: httpx.Client, namespace: str) -> str:  # noqa: F811
    """Two widgets: "a" with a value of every type, "b" with values that do not fit their columns."""
    path = f"/apis/{GROUP}/v1/namespaces/{namespace}/widgets"
    now = datetime.datetime.now(datetime.UTC)
    spec_a = {
        "conditions": [{"type": "Progressing", "status": "True"}, {"type": "Ready", "status": "False"}],
        "count": 3,
        "ratio": 0.5,
        "enabled": True,
        "startedAt": rfc3339(now - datetime.timedelta(minutes=30, seconds=10)),
        "deadline": rfc3339(now + datetime.timedelta(hours=2)),  # a date column renders the future as <invalid>
        "value": {"b": 1, "a": "<x>"},
        "items": ["x", "y"],
    }
    spec_b = {"count": 2.7, "ratio": 4, "enabled": "yes", "startedAt": "yesterday", "value": 2.5, "items": []}
    for name, spec in [("a", spec_a), ("b", spec_b)]:
        body = {"apiVersion": f"{GROUP}/v1", "kind": "Widget", "metadata": {"name": name}, "spec": spec}
        ok(kube.post(path, json=body), 201)
    return path


def table(kube: httpx.Client, path: str, accept: str = KUBECTL_ACCEPT, **params: str) -> JsonDict:  # noqa: F811
    return ok(kube.get(path, params=params, headers={"Accept": accept}))


# ----- the tests for both -----


def test_a_list_as_kubectl_asks_for_it_renders_every_column_type(
    kube: httpx.Client,  # noqa: F811
    namespace: str,  # noqa: F811
    widgets: str,
) -> None:
    path = put_widgets(kube, namespace)

    got = table(kube, path)

    assert (got["kind"], got["apiVersion"]) == ("Table", "meta.k8s.io/v1")
    assert int(got["metadata"]["resourceVersion"]) > 0
    assert "continue" not in got["metadata"]
    definitions = got["columnDefinitions"]
    assert [d["name"] for d in definitions] == COLUMNS
    name, *custom = definitions
    assert (name["type"], name["format"], name["priority"]) == ("string", "name", 0)
    assert name["description"]  # metav1.ObjectMeta's documentation of name
    by_name = {d["name"]: d for d in custom}
    assert by_name["Count"] == {
        "name": "Count",
        "type": "integer",
        "format": "int64",
        "description": "Custom resource definition column (in JSONPath format): .spec.count",
        "priority": 0,
    }
    assert by_name["Started"]["description"] == "Since when."
    assert [d["priority"] for d in custom] == [0, 0, 0, 0, 0, 1, 2, 0, 0]

    row_a, row_b = got["rows"]
    *cells_a, age_a = row_a["cells"]
    assert cells_a == ["a", "False", 3, 0.5, True, "30m", "<invalid>", '{"a":"\\u003cx\\u003e","b":1}', "y"]
    assert AGE.fullmatch(age_a), age_a
    # Values that do not fit their column: an integer is truncated, a number stays one, a boolean
    # or date of the wrong kind is empty or <invalid>; missing keys and bad indexes leave cells empty.
    *cells_b, age_b = row_b["cells"]
    assert cells_b == ["b", None, 2, 4, None, "<invalid>", None, "2.5", None]
    assert AGE.fullmatch(age_b), age_b
    for row, row_name in [(row_a, "a"), (row_b, "b")]:
        # The object's metadata only, unless includeObject says otherwise.
        assert set(row["object"]) == {"kind", "apiVersion", "metadata"}
        assert (row["object"]["kind"], row["object"]["apiVersion"]) == ("PartialObjectMetadata", "meta.k8s.io/v1")
        assert row["object"]["metadata"]["name"] == row_name
        assert row["object"]["metadata"]["namespace"] == namespace


def test_one_object_pages_and_the_row_objects_as_asked(
    kube: httpx.Client,  # noqa: F811
    namespace: str,  # noqa: F811
    widgets: str,
) -> None:
    path = put_widgets(kube, namespace)

    one = table(kube, f"{path}/b")
    stored = ok(kube.get(f"{path}/b"))
    assert one["kind"] == "Table"
    assert one["metadata"] == {"resourceVersion": stored["metadata"]["resourceVersion"]}
    [row] = one["rows"]
    assert row["cells"][:3] == ["b", None, 2]
    assert row["object"]["metadata"] == stored["metadata"]

    first = table(kube, path, limit="1")
    assert [r["cells"][0] for r in first["rows"]] == ["a"]
    assert first["metadata"]["continue"]
    rest = table(kube, path, limit="1", **{"continue": first["metadata"]["continue"]})
    assert [r["cells"][0] for r in rest["rows"]] == ["b"]

    whole = table(kube, path, TABLE_V1, includeObject="Object")
    assert [r["object"]["kind"] for r in whole["rows"]] == ["Widget", "Widget"]
    assert whole["rows"][1]["object"]["spec"]["value"] == 2.5
    assert [r["object"] for r in table(kube, path, TABLE_V1, includeObject="None")["rows"]] == [None, None]
    assert table(kube, path, TABLE_V1, includeObject="Metadata")["rows"][0]["object"]["kind"] == "PartialObjectMetadata"
    status = failed(kube.get(path, params={"includeObject": "Everything"}, headers={"Accept": TABLE_V1}), 400)
    assert status["reason"] == "BadRequest"
    assert "includeObject" in status["message"]

    older = table(kube, path, TABLE_V1BETA1)
    assert (older["kind"], older["apiVersion"]) == ("Table", "meta.k8s.io/v1beta1")
    assert older["rows"][0]["object"]["apiVersion"] == "meta.k8s.io/v1beta1"
    assert older["rows"][0]["cells"][:-1] == table(kube, path)["rows"][0]["cells"][:-1]  # all but the age

    empty = table(kube, f"/apis/{GROUP}/v1/namespaces/{namespace}-empty/widgets")
    assert empty["rows"] == []
    assert [d["name"] for d in empty["columnDefinitions"]] == COLUMNS
