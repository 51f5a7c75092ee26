"""Structured logs: one JSON object per line on stderr, never a secret.

``log.info("synced", extra=fields(environment=env, version=7))`` becomes
``{"ts": …, "level": "info", "logger": "syncd", "event": "synced", "environment": …}``.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson


class JsonFormatter(logging.Formatter):
    def __init__(self, component: str) -> None:
        super().__init__()
        self.component = component

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "component": self.component,
            "logger": record.name,
            "event": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info and record.exc_info[0] is not None:
            # Operators get the exception type and message on the same line, not a dump.
            entry["error"] = describe(record.exc_info[1])
        return orjson.dumps(entry, default=str).decode()


def configure(component: str, level: str = "INFO") -> None:
    """Route every logger to one JSON line per record on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(component))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiohttp's access log is one line per request: too much at the edge's request rates.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.Formatter.converter = time.gmtime


def describe(exc: BaseException | None) -> str:
    """An exception as one line for a log field or a status: ``"TypeName: message"``."""
    return f"{type(exc).__name__}: {exc}"


def fields(**values: Any) -> dict[str, Any]:
    """``extra=`` for a structured log call: ``log.info("x", extra=fields(a=1))``."""
    return {"fields": values}
