"""The pure parts of crivline.wire: the error body, the refusal descriptions, the gate's
thresholds and the refusal log's rate limit."""

from __future__ import annotations

import logging

import orjson
import pytest
from aiohttp import http_exceptions
from support.waiting import eventually

from crivline.wire import Gate, RefusalLog, describe_refusal, problem


def test_problem_bodies_name_the_status() -> None:
    ctype, body = problem(431, "too long")
    assert ctype == "application/problem+json"
    assert orjson.loads(body) == {
        "type": "about:blank",
        "title": "Request Header Fields Too Large",
        "status": 431,
        "detail": "too long",
    }


def test_refusals_are_described_without_the_request() -> None:
    secret = "crv_srv_" + "s" * 43
    exc = http_exceptions.InvalidHeader(f"Authorization: Bearer {secret}".encode())
    text = describe_refusal(400, exc)
    assert text == "a header line is malformed"
    assert describe_refusal(400, http_exceptions.BadHttpMessage(secret)).find("crv_") == -1
    assert "UTF-8" in describe_refusal(400, UnicodeEncodeError("utf-8", "x", 0, 1, "bad"))


def test_the_gate_admits_up_to_its_cap_and_is_crowded_from_ninety_percent() -> None:
    gate = Gate(max_connections=20)
    for _ in range(17):
        assert gate.admit()
    assert not gate.crowded()
    assert gate.admit()  # 18 of 20
    assert gate.crowded()
    assert gate.admit()
    assert gate.admit()
    assert not gate.admit()
    assert gate.refused == 1
    assert gate.open == 20
    assert b"503 Service Unavailable" in gate.full_answer()
    assert b"Retry-After: 1" in gate.full_answer()
    assert not Gate().crowded()  # no cap: never crowded
    assert Gate().admit()


async def test_the_refusal_log_keeps_a_burst_then_summarises(
    caplog: pytest.LogCaptureFixture,
) -> None:
    refusals = RefusalLog(burst=3, window=0.3)
    with caplog.at_level(logging.INFO, logger="crivline.wire"):
        for _ in range(50):
            refusals.refused(400, http_exceptions.BadHttpMessage("x"), "127.0.0.1")

        def summary() -> list[logging.LogRecord]:
            return [r for r in caplog.records if "than logged" in r.getMessage()]

        [record] = await eventually(summary, within=5, what="the summary line")
    lines = [r for r in caplog.records if r.getMessage() == "request refused before routing"]
    assert len(lines) == 3
    assert record.fields["unlogged"] == 47  # type: ignore[attr-defined]
