"""Logging set-up: text or JSON lines; every line about a resource names it (``namespace/name``).

Code that logs about a resource passes ``extra={"resource": "ns/name"}`` (or uses a
LoggerAdapter that does): text lines then start with ``[ns/name]``, JSON lines carry a
``resource`` field.
"""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        resource = getattr(record, "resource", None)
        if resource:
            record.message = f"[{resource}] {record.message}"
        return super().formatMessage(record)


def configure_logging(level: str, log_format: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Client libraries log request details at debug level: Secret data must never get there.
    for noisy in ("httpx", "httpcore", "kubernetes", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
