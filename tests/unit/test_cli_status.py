"""What ``tokensync status`` prints and how ``tokensync refresh`` decides, without a cluster.

All pure: objects are dicts as the API returns them, and every moment is a fixed UTC datetime.
"""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from tokensync import statuscli
from tokensync.cli import main
from tokensync.core import parse_rfc3339, rfc3339
from tokensync.kubeconfig import KubeconfigError, load_kubeconfig, pick_context
from tokensync.statuscli import (
    Request,
    State,
    expires_in,
    human_duration,
    next_renewal,
    overview,
    refresh_verdict,
    render,
    request_value,
    row,
    token_is_new,
)

NOW = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
REFRESH = "tokensync.io/refresh-requested-at"


def cc(name: str = "palisade", namespace: str = "payments", *, status: Any = None, **spec: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "tokensync.io/v1alpha1",
        "kind": "ClientCredential",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"credentialsRef": {"name": "creds"}, **spec},
    }
    if status is not None:
        obj["status"] = status
    return obj


def ready_status(**extra: Any) -> dict[str, Any]:
    return {
        "conditions": [
            {"type": "Ready", "status": "True", "reason": "TokenIssued", "message": "Secret palisade holds a token"},
            {"type": "Stalled", "status": "False", "reason": "AsExpected"},
        ],
        "secretName": "palisade",
        "issuedAt": rfc3339(NOW - 19 * MINUTE),
        "expiresAt": rfc3339(NOW + 41 * MINUTE),
        "renewalTime": rfc3339(NOW + 21 * MINUTE),
        "failedAttempts": 0,
        **extra,
    }


def failing_status(**extra: Any) -> dict[str, Any]:
    return {
        "conditions": [
            {"type": "Ready", "status": "False", "reason": "InvalidCredentials", "message": "rejected (HTTP 401)"},
        ],
        "secretName": "palisade",
        "failedAttempts": 3,
        "lastFailureTime": rfc3339(NOW - MINUTE),
        "lastFailure": {"reason": "InvalidCredentials", "httpStatus": 401, "message": "rejected (HTTP 401)"},
        **extra,
    }


READY = cc(status=ready_status())
FAILING = cc("broken", status=failing_status())
# The token is still valid; the last refresh failed and is retried past the renewal time.
FAILING_BUT_VALID = cc(
    "retrying",
    status=ready_status(
        renewalTime=rfc3339(NOW - 2 * MINUTE),
        failedAttempts=2,
        lastFailure={"reason": "EndpointUnavailable", "message": "the endpoint failed (HTTP 503): upstream down"},
    ),
)
SUSPENDED = cc(
    "paused",
    suspend=True,
    status=ready_status(
        conditions=[{"type": "Ready", "status": "True", "reason": "Suspended", "message": "refreshing is suspended"}]
    ),
)
EXPIRED = cc(
    "lapsed",
    status=failing_status(expiresAt=rfc3339(NOW - 3 * MINUTE), renewalTime=rfc3339(NOW - 20 * MINUTE)),
)
NO_STATUS = cc("new")


# Durations --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        pytest.param(0, "0s", id="nothing is 0s"),
        pytest.param(59.9, "59s", id="seconds are cut, not rounded"),
        pytest.param(119, "119s", id="exact seconds below two minutes"),
        pytest.param(120, "2m", id="whole minutes from two minutes"),
        pytest.param(450, "7m30s", id="minutes and seconds below ten minutes"),
        pytest.param(41 * 60 + 59, "41m", id="only minutes below three hours"),
        pytest.param(3 * 3600 + 12 * 60, "3h12m", id="hours and minutes below eight hours"),
        pytest.param(5 * 3600, "5h", id="whole hours drop the minutes"),
        pytest.param(20 * 3600 + 59 * 60, "20h", id="only hours below two days"),
        pytest.param(76 * 3600, "3d4h", id="days and hours below eight days"),
        pytest.param(45 * 86400 + 3600, "45d", id="only days below two years"),
        pytest.param((2 * 365 + 30) * 86400, "2y30d", id="years and days below eight years"),
        pytest.param(10 * 365 * 86400, "10y", id="only years from eight years"),
        pytest.param(-5, "0s", id="a negative duration is 0s"),
    ],
)
def test_durations_are_rounded_as_kubectl_rounds_ages(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


def test_expiry_reads_as_time_left_or_time_since_it_expired() -> None:
    assert expires_in(NOW + 41 * MINUTE, NOW) == "41m"
    assert expires_in(NOW - 3 * MINUTE, NOW) == "expired 3m ago"
    assert expires_in(NOW, NOW) == "expired 0s ago"
    assert expires_in(None, NOW) == "<none>"


def test_next_renewal_reads_as_time_left_overdue_or_suspended() -> None:
    assert next_renewal(NOW + 27 * MINUTE, NOW) == "27m"
    assert next_renewal(NOW - 2 * MINUTE, NOW) == "overdue 2m"
    assert next_renewal(NOW + 27 * MINUTE, NOW, suspended=True) == "suspended"
    assert next_renewal(None, NOW) == "<none>"


# Rows ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("obj", "cells"),
    [
        pytest.param(READY, ["palisade", "True", "TokenIssued", "41m", "21m", "<none>"], id="a ready resource"),
        pytest.param(
            FAILING,
            ["broken", "False", "InvalidCredentials", "<none>", "<none>", "InvalidCredentials: rejected (HTTP 401)"],
            id="a failing resource without a token",
        ),
        pytest.param(
            FAILING_BUT_VALID,
            [
                "retrying",
                "True",
                "TokenIssued",
                "41m",
                "overdue 2m",
                "EndpointUnavailable: the endpoint failed (HTTP 503): upstream down",
            ],
            id="a failing refresh while the token is still valid",
        ),
        pytest.param(
            EXPIRED,
            [
                "lapsed",
                "False",
                "InvalidCredentials",
                "expired 3m ago",
                "overdue 20m",
                "InvalidCredentials: rejected (HTTP 401)",
            ],
            id="an expired token",
        ),
        pytest.param(
            SUSPENDED, ["paused", "True", "Suspended", "41m", "suspended", "<none>"], id="a suspended resource"
        ),
        pytest.param(
            NO_STATUS, ["new", "Unknown", "<none>", "<none>", "<none>", "<none>"], id="a resource without status"
        ),
    ],
)
def test_each_resource_is_one_row_of_facts(obj: dict[str, Any], cells: list[str]) -> None:
    assert row(overview(obj), NOW) == cells


def test_all_namespaces_puts_the_namespace_first() -> None:
    assert row(overview(READY), NOW, all_namespaces=True)[:2] == ["payments", "palisade"]


def test_wide_adds_the_secret_exact_times_and_attempts_and_ends_with_the_failure() -> None:
    assert row(overview(FAILING_BUT_VALID), NOW, wide=True) == [
        "retrying",
        "True",
        "TokenIssued",
        "41m",
        "overdue 2m",
        "palisade",
        rfc3339(NOW + 41 * MINUTE),
        rfc3339(NOW - 2 * MINUTE),
        "2",
        "EndpointUnavailable: the endpoint failed (HTTP 503): upstream down",
    ]


def test_a_long_failure_message_is_shortened_in_the_table_only() -> None:
    long = "x" * 300
    obj = cc(status=failing_status(lastFailure={"reason": "InvalidRequest", "message": long}))

    short = row(overview(obj), NOW)[-1]
    wide = row(overview(obj), NOW, wide=True)[-1]

    assert short == "InvalidRequest: " + "x" * 47 + "…"
    assert len(wide) == len("InvalidRequest: ") + statuscli.WIDE_MESSAGE
    assert json.loads(render([obj], NOW, "json"))[0]["lastFailure"]["message"] == long


def test_status_text_cannot_move_the_cursor_or_break_a_row() -> None:
    obj = cc(status=failing_status(lastFailure={"reason": "InvalidRequest", "message": "a\x1b[2Jb\nc\td"}))

    assert row(overview(obj), NOW)[-1] == "InvalidRequest: a [2Jb c d"


def test_malformed_status_fields_are_shown_as_missing_rather_than_failing() -> None:
    obj = cc(status={"conditions": "nonsense", "expiresAt": "yesterday", "failedAttempts": "3", "lastFailure": 7})

    assert row(overview(obj), NOW, wide=True) == [
        "palisade",
        "Unknown",
        "<none>",
        "<none>",
        "<none>",
        "<none>",
        "<none>",
        "<none>",
        "0",
        "<none>",
    ]


# Tables and machine-readable output ------------------------------------------------------------------


def test_the_table_is_sorted_and_aligned_under_its_headers() -> None:
    other = cc("palisade", "billing", status=ready_status())

    text = render([READY, FAILING, other], NOW, all_namespaces=True)

    assert text.endswith("\n")
    header, *rows = text.splitlines()
    assert header == ("NAMESPACE   NAME       READY   REASON               EXPIRES IN   NEXT RENEWAL   LAST FAILURE")
    assert [r.split()[:2] for r in rows] == [["billing", "palisade"], ["payments", "broken"], ["payments", "palisade"]]
    for line in rows:
        assert line[header.index("READY") - 1] == " "
        assert line[header.index("READY")] in "TF"
    assert all(line == line.rstrip() for line in text.splitlines())


def test_json_and_yaml_are_the_same_list_of_facts_with_the_raw_status() -> None:
    items = json.loads(render([READY, FAILING], NOW, "json"))

    assert yaml.safe_load(render([READY, FAILING], NOW, "yaml")) == items
    broken, palisade = items
    assert palisade == {
        "namespace": "payments",
        "name": "palisade",
        "ready": "True",
        "reason": "TokenIssued",
        "message": "Secret palisade holds a token",
        "secretName": "palisade",
        "suspended": False,
        "issuedAt": rfc3339(NOW - 19 * MINUTE),
        "expiresAt": rfc3339(NOW + 41 * MINUTE),
        "expiresInSeconds": 41 * 60,
        "renewalTime": rfc3339(NOW + 21 * MINUTE),
        "renewalInSeconds": 21 * 60,
        "lastFailure": None,
        "failedAttempts": 0,
        "status": READY["status"],
    }
    assert broken["lastFailure"] == {
        "reason": "InvalidCredentials",
        "message": "rejected (HTTP 401)",
        "time": rfc3339(NOW - MINUTE),
    }
    assert broken["expiresInSeconds"] is None


def test_output_holds_status_only_never_spec_or_metadata() -> None:
    obj = cc(status=ready_status(), target={"template": {"authorization": "Bearer ${accessToken}"}})
    obj["metadata"]["annotations"] = {"note": "do-not-print-7c1e"}

    for output in statuscli.OUTPUT_FORMATS:
        text = render([obj], NOW, output)
        assert "do-not-print-7c1e" not in text
        assert "accessToken" not in text


def test_no_resources_names_the_namespace() -> None:
    assert statuscli.no_resources("payments") == "No resources found in payments namespace."
    assert statuscli.no_resources(None) == "No resources found."


# Refresh requests -----------------------------------------------------------------------------------


def test_a_request_value_is_rfc3339_with_microseconds_so_each_call_is_new() -> None:
    value = request_value(NOW + timedelta(microseconds=1234))

    assert value == "2030-01-01T12:00:00.001234Z"
    assert parse_rfc3339(value) == NOW + timedelta(microseconds=1234)
    assert request_value(NOW + timedelta(microseconds=1235)) != value
    assert statuscli.refresh_patch(value) == {"metadata": {"annotations": {REFRESH: value}}}


VALUE = "2030-01-01T12:00:00.500000Z"
REQUEST = Request("payments", "palisade", VALUE, previous_issued_at=NOW - 19 * MINUTE)


def requested(status: dict[str, Any] | None, annotation: str = VALUE, **spec: Any) -> dict[str, Any]:
    obj = cc(status=status, **spec)
    obj["metadata"]["annotations"] = {REFRESH: annotation}
    return obj


@pytest.mark.parametrize(
    ("obj", "state", "words"),
    [
        pytest.param(requested(ready_status()), State.WAITING, "", id="not acted on yet"),
        pytest.param(requested(None), State.WAITING, "", id="no status yet"),
        pytest.param(requested(ready_status(lastRefreshRequest=VALUE)), State.ACTED, "", id="acted on"),
        pytest.param(
            requested(ready_status(lastRefreshRequest="2030-01-01T12:00:01Z"), annotation="2030-01-01T12:00:01Z"),
            State.ACTED,
            "",
            id="a later request replaced it and was acted on",
        ),
        pytest.param(
            requested(failing_status(pendingRefreshRequest=VALUE)),
            State.FAILED,
            "the refresh failed: InvalidCredentials: rejected (HTTP 401) (tokensync keeps retrying it)",
            id="its exchange failed",
        ),
        pytest.param(
            requested(ready_status(pendingRefreshRequest="2029-12-31T00:00:00Z")),
            State.WAITING,
            "",
            id="an older request's failure is not its own",
        ),
        pytest.param(
            requested(ready_status(), suspend=True), State.FAILED, "it is suspended", id="the resource is suspended"
        ),
        pytest.param(None, State.FAILED, "it was deleted while waiting", id="the resource was deleted"),
    ],
)
def test_a_refresh_request_is_judged_from_the_resources_status(
    obj: dict[str, Any] | None, state: State, words: str
) -> None:
    verdict = refresh_verdict(obj, REQUEST)

    assert verdict.state is state
    assert words in verdict.message


def test_a_token_is_new_when_issued_in_or_after_the_requests_second_or_after_the_previous_token() -> None:
    assert token_is_new(REQUEST, NOW)  # whole seconds: the request's own second counts
    assert token_is_new(REQUEST, NOW + MINUTE)
    assert not token_is_new(REQUEST, NOW - 19 * MINUTE)  # the token it already had
    assert not token_is_new(REQUEST, None)
    # The operator's clock behind ours: still new, since it is later than the token before.
    assert token_is_new(REQUEST, NOW - 5 * MINUTE)
    assert not token_is_new(Request("payments", "palisade", VALUE), NOW - 5 * MINUTE)


def test_a_timeout_says_what_the_resource_shows() -> None:
    assert statuscli.waiting_summary(cc()) == "it has no status: is the operator running?"
    assert statuscli.waiting_summary(None) == "it does not exist"
    assert statuscli.waiting_summary(FAILING) == (
        "Ready=False InvalidCredentials, last failure InvalidCredentials: rejected (HTTP 401)"
    )


# The kubeconfig -------------------------------------------------------------------------------------


def kubeconfig(
    current: str | None, *contexts: tuple[str, str | None], server: str = "https://a.example"
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {"token": "kubeconfig-token-not-printed"}}],
        "contexts": [
            {"name": name, "context": {"cluster": "c", "user": "u", **({"namespace": ns} if ns else {})}}
            for name, ns in contexts
        ],
    }
    if current is not None:
        doc["current-context"] = current
    return doc


def test_the_current_context_gives_the_namespace_or_default() -> None:
    doc = kubeconfig("dev", ("dev", "payments"), ("bare", None))

    assert pick_context([doc], None) == ("dev", "payments")
    assert pick_context([doc], "bare") == ("bare", "default")


def test_of_several_kubeconfig_files_the_first_to_say_wins() -> None:
    first = kubeconfig("one", ("shared", "from-first"))
    second = kubeconfig("two", ("shared", "from-second"), ("one", "ns-one"))

    assert pick_context([first, second], None) == ("one", "ns-one")
    assert pick_context([first, second], "shared") == ("shared", "from-first")


def test_a_missing_or_unnamed_context_is_an_error_that_says_so() -> None:
    with pytest.raises(KubeconfigError, match='context "nope" does not exist'):
        pick_context([kubeconfig("dev", ("dev", None))], "nope")
    with pytest.raises(KubeconfigError, match="no current-context"):
        pick_context([kubeconfig(None, ("dev", None))], None)


def test_load_kubeconfig_reads_a_path_list_and_the_chosen_context(tmp_path: Path) -> None:
    (tmp_path / "a").write_text(yaml.safe_dump(kubeconfig("dev", ("dev", "payments"))))
    other = kubeconfig(None, ("prod", "billing"), server="https://b.example")
    other["clusters"][0]["name"] = other["contexts"][0]["context"]["cluster"] = "b"
    (tmp_path / "b").write_text(yaml.safe_dump(other))
    paths = f"{tmp_path / 'a'}:{tmp_path / 'missing'}:{tmp_path / 'b'}"

    configuration, namespace = load_kubeconfig(paths, None)
    assert (configuration.host, namespace) == ("https://a.example", "payments")
    configuration, namespace = load_kubeconfig(paths, "prod")
    assert (configuration.host, namespace) == ("https://b.example", "billing")


def test_no_kubeconfig_at_all_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(KubeconfigError, match="no kubeconfig found"):
        load_kubeconfig(str(tmp_path / "absent"), None)


# Usage ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "words"),
    [
        pytest.param(
            ["refresh"], "name one ClientCredential, or use --all or --selector", id="refresh without a target"
        ),
        pytest.param(["refresh", "a", "--all"], "name one ClientCredential", id="refresh with a name and --all"),
        pytest.param(["refresh", "--all", "-l", "a=b"], "name one ClientCredential", id="refresh with --all and -l"),
        pytest.param(["refresh", "a", "-A"], "across all namespaces", id="refresh a name in all namespaces"),
        pytest.param(["refresh", "--all", "-n", "x", "-A"], "exclusive", id="refresh with -n and -A"),
        pytest.param(["status", "a", "-A"], "across all namespaces", id="status of a name in all namespaces"),
        pytest.param(["status", "-n", "x", "-A"], "exclusive", id="status with -n and -A"),
        pytest.param(["status", "-o", "xml"], "'xml' is not one of", id="status in an unknown format"),
    ],
)
def test_contradictory_arguments_are_usage_errors(args: list[str], words: str) -> None:
    result = CliRunner().invoke(main, [*args, "--kubeconfig", "/nonexistent"])

    assert result.exit_code == 2
    assert words in result.output


def test_an_unusable_kubeconfig_exits_1_with_the_reason(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["status", "--kubeconfig", str(tmp_path / "absent")])

    assert result.exit_code == 1
    assert result.stderr.strip() == f"error: no kubeconfig found at {tmp_path / 'absent'}"


def test_an_unreachable_api_server_exits_1_with_the_reason(tmp_path: Path) -> None:
    with socket.socket() as held:  # bound, never listening: connections are refused, and the port stays ours
        held.bind(("127.0.0.1", 0))
        server = f"http://127.0.0.1:{held.getsockname()[1]}"
        (tmp_path / "config").write_text(yaml.safe_dump(kubeconfig("dev", ("dev", None), server=server)))

        result = CliRunner().invoke(main, ["status", "--kubeconfig", str(tmp_path / "config")])

    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: cannot reach the API server at {server}: ConnectError")
    assert "kubeconfig-token-not-printed" not in result.output
