"""Log formats: text lines start with [ns/name], JSON lines are one object each with a resource field."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from tokensync.logs import TextFormatter, configure_logging

QUIETED = ("httpx", "httpcore", "kubernetes", "urllib3")


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """configure_logging changes the root logger: put everything back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    levels = {name: logging.getLogger(name).level for name in QUIETED}
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, saved in levels.items():
            logging.getLogger(name).setLevel(saved)


def record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("tokensync.test", logging.INFO, __file__, 1, message, args, None)
    made.__dict__.update(extra)
    return made


# TextFormatter ---------------------------------------------------------------------------------


def test_text_lines_about_a_resource_start_with_its_name() -> None:
    line = TextFormatter().format(record("Token renewed in %ds.", 3, resource="team-a/api"))
    assert line.endswith(" INFO    tokensync.test [team-a/api] Token renewed in 3s.")


def test_text_lines_about_nothing_in_particular_have_no_prefix() -> None:
    line = TextFormatter().format(record("Started."))
    assert line.endswith(" INFO    tokensync.test Started.")
    assert "[" not in line


def test_text_formatting_twice_does_not_repeat_the_prefix() -> None:
    formatter = TextFormatter()
    same = record("hello", resource="ns/name")
    assert formatter.format(same) == formatter.format(same)
    assert formatter.format(same).count("[ns/name]") == 1


def test_text_exceptions_follow_the_line() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logger = logging.getLogger("tokensync.test.exc")
        stream = io.StringIO()
        handler = logging.StreamHandler(stream)
        handler.setFormatter(TextFormatter())
        logger.addHandler(handler)
        logger.propagate = False
        try:
            logger.exception("Failed.", extra={"resource": "ns/name"})
        finally:
            logger.removeHandler(handler)
            logger.propagate = True
    first, *rest = stream.getvalue().splitlines()
    assert first.endswith("[ns/name] Failed.")
    assert "RuntimeError: boom" in rest[-1]


# configure_logging -----------------------------------------------------------------------------


@pytest.mark.usefixtures("restore_logging")
def test_configure_logging_text(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", "text")
    logger = logging.getLogger("tokensync.controller")
    logger.info("Round done.", extra={"resource": "ns/cc"})
    logger.debug("Not shown at info.")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert lines[0].endswith("INFO    tokensync.controller [ns/cc] Round done.")


@pytest.mark.usefixtures("restore_logging")
def test_configure_logging_json_is_one_object_per_line(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("DEBUG", "json")
    logger = logging.getLogger("tokensync.controller")
    logger.info("Round done.", extra={"resource": "ns/cc"})
    logger.warning('A "quoted"\nmulti-line message.', extra={"resource": "ns/other"})
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        logger.exception("Unexpected error.", extra={"resource": "ns/cc"})
    logger.debug("No resource here.")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 4
    entries = [json.loads(line) for line in lines]
    assert all(isinstance(entry, dict) for entry in entries)
    first = entries[0]
    assert first["resource"] == "ns/cc"
    assert first["message"] == "Round done."
    assert first["level"] == "INFO"
    assert first["logger"] == "tokensync.controller"
    assert first["time"]
    assert entries[1]["resource"] == "ns/other"
    assert entries[1]["message"] == 'A "quoted"\nmulti-line message.'
    assert entries[2]["resource"] == "ns/cc"
    assert "ValueError" in entries[2]["exc_info"]
    assert entries[3]["level"] == "DEBUG"
    assert "resource" not in entries[3]


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize("log_format", ["text", "json"])
def test_configure_logging_keeps_client_libraries_at_warning(
    log_format: str, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("debug", log_format)
    assert logging.getLogger().level == logging.DEBUG
    for name in QUIETED:
        assert logging.getLogger(name).getEffectiveLevel() == logging.WARNING
    logging.getLogger("httpx").info("HTTP Request: GET https://kubernetes/api/v1/secrets/creds")
    logging.getLogger("httpcore.http11").debug("receive_response_body.complete data=TOPSECRET")
    logging.getLogger("tokensync").debug("Our own debug line.")
    err = capsys.readouterr().err
    assert "TOPSECRET" not in err
    assert "HTTP Request" not in err
    assert "Our own debug line." in err


@pytest.mark.usefixtures("restore_logging")
def test_configure_logging_replaces_earlier_handlers(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", "text")
    configure_logging("info", "json")
    logging.getLogger("tokensync").info("Once.")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0])["message"] == "Once."
