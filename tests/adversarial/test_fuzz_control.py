"""Hostile input to every control route: never a 5xx, never a hang, never a traceback,
never another tenant's data; every refusal an RFC 9457 problem with a message; and a
refused write changes nothing, while an accepted one that changes what an edge serves
leaves its audit row.

Routes come from the control app's own declarations (``control.routes.operations``),
so a route added later is fuzzed without editing this file.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable
from typing import Any, TypeVar

import pytest
from fuzzkit import (
    check_control,
    fuzz_settings,
    header_value,
    json_values,
    odd_methods,
    path_segment,
    raw_bodies,
    raw_segment,
    tricky_text,
)
from hypothesis import given
from hypothesis import strategies as st
from rawhttp import exchange, request_bytes
from support.control_testkit import BODIES, TENANT_ROWS
from world import ENVS, TENANTS, World, marker

from control.bodies import Body
from control.routes import operations

T = TypeVar("T")

OPERATIONS = operations()
STATE = """
SELECT (SELECT count(*) FROM audit_log) AS audit,
       (SELECT coalesce(json_agg(version ORDER BY id), '[]') FROM environments) AS versions
"""


def on_loop(loop: asyncio.AbstractEventLoop, coro: Awaitable[T]) -> T:
    """Run ``coro`` on the servers' loop from the Hypothesis thread."""
    return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout=30)  # type: ignore[arg-type]


SLUG = st.from_regex(r"[a-z][a-z0-9-]{0,12}", fullmatch=True)


def mutated_body(
    draw: st.DrawFn, spec: Body | None, operation_id: str, hostile: bool
) -> bytes | None:
    """A body for an operation: its valid example bent out of shape, or raw bytes."""
    choice = draw(st.integers(0, 5)) if hostile else draw(st.sampled_from([1, 3, 5, 5]))
    if choice == 0:
        return draw(st.one_of(st.none(), raw_bodies))
    base: Any = dict(
        BODIES.get(operation_id) or (spec.examples[0] if spec and spec.examples else {})
    )
    if "key" in base:
        base["key"] = draw(SLUG)  # mostly new, sometimes taken
    if choice == 1 and spec is not None:  # a declared field with a value of any type
        base[draw(st.sampled_from(sorted(spec.fields)))] = draw(json_values)
    elif choice == 2:  # unknown fields
        base.update(draw(st.dictionaries(tricky_text, json_values, min_size=1, max_size=3)))
    elif choice == 3 and spec is not None:  # strings full of odd characters
        for name, field in spec.fields.items():
            if field.kind == "string" and draw(st.booleans()):
                base[name] = draw(tricky_text)
    elif choice == 4:  # the whole body replaced by any JSON value
        base = draw(json_values)
    return json.dumps(base).encode()


WELL_FORMED = {
    "If-Match": st.sampled_from(['"1"', '"2"', "*", '"1", "2"', 'W/"1"', '"999"']),
    "If-None-Match": st.sampled_from(['"1"', "*", 'W/"1"']),
    "Idempotency-Key": SLUG,
}


@st.composite
def control_requests(draw: st.DrawFn, world: World) -> tuple[bytes, str, bool]:
    """One request (hostile, or well-formed with bent content); the tenant whose token
    it carries; whether it is a write."""
    hostile = draw(st.booleans())
    op = draw(st.sampled_from(OPERATIONS))
    values = {
        "project": ["shop"],
        "environment": list(ENVS),
        "flag": ["checkout", "hostile"],
        "segment": ["pro", "fresh"],
        "key_id": [world.tenants[t].key_ids[(e, "server")] for t in TENANTS for e in ENVS],
    }

    def segment(name: str) -> bytes:
        pick = draw(st.integers(0, 3)) if hostile else 3
        if pick == 0:
            return draw(raw_segment)
        if pick == 1:
            return draw(path_segment).encode()
        return draw(st.sampled_from(values.get(name, ["x"]))).encode()

    target = re.sub(rb"\{(\w+)\}", lambda m: segment(m.group(1).decode()), op.path.encode())
    method: str = op.method
    if hostile and draw(st.integers(0, 4)) == 0:
        method = draw(odd_methods)
    if hostile and draw(st.booleans()):
        name = draw(st.sampled_from(["archived", "limit", "cursor", "project", "x"]))
        target += b"?" + name.encode() + b"=" + draw(path_segment).encode()
    tenant = draw(st.sampled_from(TENANTS))
    auth = draw(st.integers(0, 9)) if hostile else 0
    headers: list[tuple[Any, Any]] = []
    if auth < 8:
        headers.append(("Authorization", f"Bearer {world.tenants[tenant].token}"))
    elif auth == 8:
        headers.append(("Authorization", b"Bearer " + draw(header_value)))
        tenant = ""
    else:
        tenant = ""
    body = mutated_body(draw, op.body, op.operation_id, hostile) if op.method != "GET" else None
    if body is not None:
        headers.append(("Content-Type", "application/json"))
    names = ["If-Match", "If-None-Match", "Idempotency-Key", "Content-Type", "Expect",
             "Content-Encoding", "Accept", "Origin", "Cookie"]  # fmt: skip
    for name in draw(
        st.lists(st.sampled_from(names if hostile else list(WELL_FORMED)), max_size=2, unique=True)
    ):
        headers.append((name, draw(header_value if hostile else WELL_FORMED[name])))
    if hostile and draw(st.integers(0, 19)) == 0:  # more headers than any client sends
        headers += [(f"X-Many-{i}", "v") for i in range(draw(st.integers(100, 300)))]
    if hostile and draw(st.integers(0, 9)) == 0 and body is not None:
        headers.append(("Transfer-Encoding", "chunked"))
        body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if body else b"0\r\n\r\n"
    writes = method in ("POST", "PUT", "PATCH", "DELETE")
    return request_bytes(method, target, headers, body), tenant, writes


def check_isolated(reply: Any, world: World, tenant: str, what: Any) -> None:
    text = reply.body.decode("utf-8", "replace")
    others = [t for t in TENANTS if t != tenant]
    words = others + [marker(t, e) for t in others for e in ENVS]
    words += [world.tenants[t].token for t in TENANTS]
    for word in words:
        assert word not in text, f"{word!r} leaked in the answer to {what}: {reply}"


async def test_no_request_breaks_control(world: World, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)
    db = world.central.db
    loop = asyncio.get_running_loop()
    globex_id = world.globex.tenant_id

    @fuzz_settings(600)
    @given(st.data())
    def run(data: st.DataObject) -> None:
        raw, tenant, writes = data.draw(control_requests(world))
        what = raw[:400]
        before = on_loop(loop, db.fetchrow(STATE)) if writes else None
        globex = on_loop(loop, db.fetchrow(TENANT_ROWS, globex_id)) if writes else None
        reply = exchange(world.control_port, raw)
        check_control(reply, what, request=raw)
        check_isolated(reply, world, tenant, what)
        if before is None:
            return
        after = on_loop(loop, db.fetchrow(STATE))
        if reply.status >= 400:
            assert after == before, f"a refused write ({reply.status}) changed something: {what}"
        elif after["versions"] != before["versions"]:
            assert after["audit"] > before["audit"], f"a write bumped without audit: {what}"
        if tenant != "globex":  # nobody else's request touches globex
            assert on_loop(loop, db.fetchrow(TENANT_ROWS, globex_id)) == globex, what

    await asyncio.to_thread(run)
    bugs = [r for r in caplog.records if r.name.startswith(("control", "crivline"))]
    assert not bugs, [r.getMessage() for r in bugs]


async def test_a_garbage_if_match_never_passes(world: World) -> None:
    """``If-Match`` that is not the current revision (or ``*``) is a 412 that changes
    nothing, however it is spelt; the current one passes."""
    db = world.central.db
    loop = asyncio.get_running_loop()
    token = ("Authorization", f"Bearer {world.acme.token}")
    path = "/api/v1/projects/shop/flags/checkout"
    current = await world.revision(world.acme, "/projects/shop/flags/checkout")

    @fuzz_settings(100)
    @given(value=header_value, name=tricky_text)
    def run(value: bytes, name: str) -> None:
        body = json.dumps({"name": name or "x"}).encode()
        headers = [token, ("Content-Type", "application/json"), ("If-Match", value)]
        before = on_loop(loop, db.fetchrow(STATE))
        reply = exchange(world.control_port, request_bytes("PATCH", path, headers, body))
        check_control(reply, value)
        tags = {t.strip() for t in value.split(b",")}
        if reply.status == 412:
            assert on_loop(loop, db.fetchrow(STATE)) == before
        elif reply.status < 300:
            assert b"*" in tags or current.encode() in tags, (value, str(reply))

    await asyncio.to_thread(run)
