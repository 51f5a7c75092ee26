"""Structured logs: one JSON object per line on stderr, never a secret.

``log.info("synced", extra=fields(environment=env, version=7))`` becomes
``{"ts": …, "level": "info", "logger": "syncd", "event": "synced", "environment": …}``.

Every line passes through :func:`redact` before it is written, whatever logged it (our
code, aiohttp, asyncpg, redis): a ``crv_…`` key or token, and the value of an
``Authorization``, ``X-API-Key``, ``Cookie`` or ``Set-Cookie`` header or of a
``Bearer``/``Basic`` credential, become ``[redacted]``. aiohttp copies a malformed
request's header line into its error message, so what a client sends can end up in a
message; the net catches it there too.
"""

from __future__ import annotations

import logging
import re
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
        return redact(orjson.dumps(entry, default=str).decode())


# A Crivline secret: crv_<kind>_<url-safe characters> (crivline.tokens).
_TOKEN = re.compile(r"crv_[A-Za-z0-9]{3}_[A-Za-z0-9_-]+")
# A secret-bearing header and its whole value, as aiohttp quotes a header line
# (b'Authorization: …'), as a dict entry ("x-api-key": "…") or in plain text.
_HEADER = re.compile(
    r"(?i)\b(authorization|proxy-authorization|x-api-key|set-cookie|cookie)"
    r"((?:\\?[\"'])?\s*[:=]\s*(?:\\?[\"'])?)"
    r"(?!\[redacted\])[^\"'\\\r\n]+"
)
# A credential after its scheme anywhere else: "Bearer abc", "Basic dXNlcjpw".
_SCHEME = re.compile(r"(?i)\b(bearer|basic)(\s+|%20)(?!\[redacted\])[^\s\"'\\,;]+")
REDACTED = "[redacted]"


def redact(text: str) -> str:
    """``text`` without the secrets a request may carry (see the module's docstring)."""
    if "crv_" in text:
        text = _TOKEN.sub("crv_" + REDACTED, text)
    text = _HEADER.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
    return _SCHEME.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)


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
