"""No secret reaches a log line, whatever logged it (crivline.logs.redact)."""

from __future__ import annotations

import logging
import sys

import orjson
import pytest

from crivline import tokens
from crivline.logs import JsonFormatter, fields, redact


@pytest.mark.parametrize("kind", list(tokens.SecretKind))
def test_every_kind_of_crivline_secret_is_redacted(kind: tokens.SecretKind) -> None:
    secret = tokens.generate(kind)
    line = redact(f"refused {secret}!")
    assert secret[8:] not in line
    assert line == "refused crv_[redacted]!"


@pytest.mark.parametrize(
    ("text", "hidden"),
    [
        # aiohttp's message for a malformed header block, as repr'd bytes in a JSON string
        ("Invalid header: b'Authorization: Bearer op3r4tor-token\\r\\nX: y'", "op3r4tor-token"),
        ("b'x-api-key: some-key-value'", "some-key-value"),
        ('{"cookie": "crivline_status=1.abc.def; other=1"}', "1.abc.def"),
        ("Set-Cookie: crivline_status=session-value; Path=/", "session-value"),
        ("proxy-authorization=Basic dXNlcjpwYXNz", "dXNlcjpwYXNz"),
        ("sent Bearer plain-secret-token to it", "plain-secret-token"),
    ],
)
def test_credentials_in_headers_are_redacted(text: str, hidden: str) -> None:
    line = redact(text)
    assert hidden not in line
    assert "[redacted]" in line


def test_ordinary_text_is_unchanged() -> None:
    text = '{"event": "synced", "environment": "e1", "version": 7, "authority": "x"}'
    assert redact(text) == text


def test_the_formatter_redacts_messages_fields_and_errors() -> None:
    secret = tokens.generate(tokens.SecretKind.SERVER)
    try:
        raise ValueError(f"Invalid header: b'Authorization: Bearer {secret}'")
    except ValueError:
        record = logging.getLogger("aiohttp.server").makeRecord(
            "aiohttp.server", logging.ERROR, __file__, 1, "Error handling request %s",
            (secret,), exc_info=sys.exc_info(),
            extra=fields(key=secret),
        )  # fmt: skip
    line = JsonFormatter("proxy").format(record)
    assert secret[8:20] not in line
    entry = orjson.loads(line)  # still one valid JSON object
    assert entry["key"] == "crv_[redacted]"
