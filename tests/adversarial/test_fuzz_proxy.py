"""Hostile input to every proxy endpoint: never a 5xx, never a hang, never a traceback,
never another tenant's or environment's data; every refusal a JSON message.

Each test runs its Hypothesis examples in a worker thread with a blocking raw-socket
client (:mod:`rawhttp`), while the real pipeline (control → Postgres → syncd → Valkey →
proxy) keeps serving on the test's event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
from fuzzkit import (
    BAD_UTF8,
    check_proxy,
    fuzz_settings,
    header_value,
    json_values,
    nested,
    odd_methods,
    path_segment,
    raw_bodies,
    raw_segment,
    tricky_text,
)
from hypothesis import given
from hypothesis import strategies as st
from rawhttp import Reply, call, exchange, request_bytes
from world import ENVS, OPERATOR_TOKEN, TENANTS, World, marker

from crivline import sse

PATHS = (
    "/sdk/v1/flags",
    "/sdk/v1/stream",
    "/ofrep/v1/evaluate/flags",
    "/ofrep/v1/evaluate/flags/checkout",
    "/ofrep/v1/events",
    "/healthz",
    "/readyz",
    "/metrics",
    "/status",
    "/status/data",
)


def forbidden(world: World, owner: tuple[str, str] | None) -> list[str]:
    """What an answer to a request made with ``owner``'s key (tenant, env) must not hold:
    the other tenant's name and every other environment's marker."""
    words = [marker(t, e) for t in TENANTS for e in ENVS if (t, e) != owner]
    words += [t for t in TENANTS if owner is None or t != owner[0]]
    words += [world.tenants[t].token for t in TENANTS]
    words += [k for t in TENANTS for k in world.tenants[t].keys.values()]
    return words


def check_isolated(reply: Reply, world: World, owner: tuple[str, str] | None, what: Any) -> None:
    text = reply.body.decode("utf-8", "replace")
    for word in forbidden(world, owner):
        assert word not in text, f"{word!r} leaked in the answer to {what}: {reply}"


@st.composite
def credentials(draw: st.DrawFn, world: World) -> tuple[list[tuple[Any, Any]], Any]:
    """Authorization headers and whose key they carry ((tenant, env) or None)."""
    choice = draw(st.integers(0, 7))
    tenant = draw(st.sampled_from(TENANTS))
    env = draw(st.sampled_from(ENVS))
    kind = draw(st.sampled_from(("server", "client")))
    key = world.tenants[tenant].key(env, kind)
    if choice == 0:
        return [], None
    if choice == 1:
        return [("Authorization", f"Bearer {key}")], (tenant, env)
    if choice == 2:
        return [("X-API-Key", key)], (tenant, env)
    if choice == 3:  # a mangled key: never anyone's
        cut = draw(st.integers(8, len(key) - 1))
        tail = draw(st.sampled_from([b"", b"x", b"\x00", b"%00", b"\xc0\xaf", b"/../"]))
        return [("Authorization", b"Bearer " + key[:cut].encode() + tail)], None
    if choice == 4:
        scheme = draw(st.sampled_from([b"Bearer ", b"bearer  ", b"Basic ", b"", b"Bearer\t"]))
        return [("Authorization", scheme + draw(header_value))], None
    if choice == 5:  # a management token or the operator token is not an API key
        secret = draw(st.sampled_from([world.tenants[tenant].token, OPERATOR_TOKEN]))
        return [("Authorization", f"Bearer {secret}")], None
    if choice == 6:  # two credentials that disagree: Authorization wins
        return [("Authorization", f"Bearer {key}"), ("X-API-Key", "crv_srv_nope")], (tenant, env)
    return [("X-API-Key", draw(header_value))], None


@st.composite
def proxy_requests(draw: st.DrawFn, world: World) -> tuple[bytes, str, bool]:
    """One hostile request as bytes; its description; whose data it may see."""
    method = draw(st.one_of(st.sampled_from(["GET", "POST", "OPTIONS"]), odd_methods))
    shape = draw(st.integers(0, 5))
    if shape == 0:
        target: bytes = draw(st.sampled_from(PATHS)).encode()
    elif shape == 1:
        target = b"/ofrep/v1/evaluate/flags/" + draw(raw_segment)
    elif shape == 2:
        target = b"/ofrep/v1/evaluate/flags/" + draw(path_segment).encode()
    elif shape == 3:
        prefix = draw(st.sampled_from(["/sdk/v1/", "/ofrep/v1/", "/", "/status/", "//"]))
        target = prefix.encode() + draw(raw_segment)
    elif shape == 4:
        target = draw(
            st.sampled_from(
                [
                    b"*",
                    b"http://evil.example/sdk/v1/flags",
                    b"/sdk/v1/flags/../../status",
                    b"/SDK/V1/FLAGS",
                    b"/sdk/v1/flags/",
                    b"/sdk/v1/./flags",
                    b"/%73dk/v1/flags",
                    b"/sdk/v1/flags;x",
                    b"/sdk/v1/flags%00",
                    b"//sdk//v1//flags",
                    b"/\\sdk\\v1",
                    b"/" + b"a" * 9000,
                ]
            )
        )
    else:
        target = draw(st.sampled_from(PATHS)).encode()
    if draw(st.booleans()):
        name = draw(
            st.sampled_from(["ticket", "flagConfigEtag", "flagConfigLastModified", "strict", "x"])
        )
        value = draw(st.one_of(path_segment, st.sampled_from(BAD_UTF8).map(bytes.hex)))
        target += b"?" + name.encode() + b"=" + value.encode()
    headers, owner = draw(credentials(world))
    for name in draw(
        st.lists(
            st.sampled_from(
                [
                    "If-None-Match",
                    "Last-Event-ID",
                    "Content-Type",
                    "Origin",
                    "Accept",
                    "X-Forwarded-Host",
                    "X-Forwarded-Proto",
                    "Access-Control-Request-Method",
                    "Cookie",
                    "Content-Encoding",
                    "Accept-Encoding",
                    "Range",
                    "Expect",
                    "X-Unknown-" + "x" * 40,
                ]
            ),
            max_size=4,
            unique=True,
        )
    ):
        headers.append((name, draw(header_value)))
    if draw(st.integers(0, 19)) == 0:  # more headers than any client sends
        headers += [(f"X-Many-{i}", "v") for i in range(draw(st.integers(100, 300)))]
    body = draw(st.one_of(st.none(), raw_bodies))
    if draw(st.integers(0, 9)) == 0:  # the same body, chunked
        headers.append(("Transfer-Encoding", "chunked"))
        body = (b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)) if body else b"0\r\n\r\n"
    data = request_bytes(method, target, headers, body)
    refetch = b"flagConfig" in target
    return data, owner, refetch


async def test_no_request_breaks_the_proxy(world: World, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)

    @fuzz_settings(800)
    @given(st.data())
    def run(data: st.DataObject) -> None:
        raw, owner, refetch = data.draw(proxy_requests(world))
        what = raw[:300]
        reply = exchange(world.proxy_port, raw)
        check_proxy(reply, what, allow_503=refetch, request=raw)
        check_isolated(reply, world, owner, what)

    await asyncio.to_thread(run)
    bugs = [r for r in caplog.records if r.name.startswith(("proxy", "crivline"))]
    assert not bugs, [r.getMessage() for r in bugs]
    assert (await world.proxy.get("/healthz")).status == 200


async def test_evaluation_contexts_of_any_shape(world: World) -> None:
    """Contexts of every JSON shape, unicode and size: a result or a 400 that says why,
    for the single and the bulk evaluation alike."""
    key = world.acme.key("dev", "client")
    auth = [("Authorization", f"Bearer {key}"), ("Content-Type", "application/json")]
    huge = st.one_of(
        st.integers(1, 40).map(lambda d: nested(d)),
        st.integers(1, 40).map(lambda d: nested(d, as_list=True)),
        st.integers(1, 30_000).map(lambda n: {f"k{i}": i for i in range(n)}),
        st.integers(1, 300_000).map(lambda n: "x" * n),
        st.integers(1, 20_000).map(lambda n: list(range(n))),
    )
    contexts = st.one_of(
        st.dictionaries(tricky_text, json_values, max_size=6),
        st.dictionaries(st.sampled_from(["targetingKey", "email", "plan", "s"]), json_values),
        st.fixed_dictionaries({"targetingKey": st.one_of(tricky_text, json_values)}),
        st.fixed_dictionaries({"big": huge}),
        huge,
        json_values,
    )

    @fuzz_settings(300)
    @given(
        context=contexts,
        extra=st.dictionaries(tricky_text, json_values, max_size=2),
        path=st.sampled_from(
            [
                "/ofrep/v1/evaluate/flags",
                "/ofrep/v1/evaluate/flags/checkout",
                "/ofrep/v1/evaluate/flags/hostile",
            ]
        ),
    )
    def run(context: Any, extra: dict[str, Any], path: str) -> None:
        body = json.dumps({**extra, "context": context}).encode()
        reply = call(world.proxy_port, "POST", path, auth, body)
        what = (path, body[:200])
        check_proxy(reply, what)
        check_isolated(reply, world, ("acme", "dev"), what)
        if reply.status == 413:
            assert len(body) > 262_144, what
            return
        answer = reply.json()
        if reply.status == 400:
            assert answer["errorCode"] in ("PARSE_ERROR", "INVALID_CONTEXT"), answer
        else:
            assert reply.status == 200, (what, str(reply))
            results = answer["flags"] if path.endswith("/flags") else [answer]
            assert {r["key"] for r in results} <= {"checkout", "hostile"}, answer

    await asyncio.to_thread(run)


async def test_conditional_and_resume_headers_never_mislead(world: World) -> None:
    """A garbage ``If-None-Match`` never earns a 304 (only the current ETag or ``*``
    does); a garbage ``Last-Event-ID`` is no resume point: the stream starts with the
    whole flag set, never with patches from a version the client does not have."""
    key = world.acme.key("dev", "server")
    auth = ("Authorization", f"Bearer {key}")
    current = await asyncio.to_thread(call, world.proxy_port, "GET", "/sdk/v1/flags", [auth])
    etag = current.header("etag") or ""
    # A stream's ids name the flag set's version, the number the ETag starts with
    # ("<flag set version>-<content hash>"); Crivline-Version may be newer (keys).
    version = etag.strip('"').split("-", 1)[0]
    bulk = await asyncio.to_thread(
        call, world.proxy_port, "POST", "/ofrep/v1/evaluate/flags", [auth], b"{}"
    )
    bulk_etag = bulk.header("etag") or ""

    def names_ours(value: bytes, ours: str) -> bool:
        tags = {t.strip().removeprefix(b"W/") for t in value.split(b",")}
        return b"*" in tags or ours.removeprefix("W/").encode() in tags

    @fuzz_settings(200)
    @given(
        value=st.one_of(
            header_value,
            st.sampled_from([etag, etag.strip('"'), "W/" + etag, bulk_etag, etag + ", x"]).map(
                str.encode
            ),
        ),
        last_event_id=header_value,
    )
    def run(value: bytes, last_event_id: bytes) -> None:
        polled = call(world.proxy_port, "GET", "/sdk/v1/flags", [auth, ("If-None-Match", value)])
        check_proxy(polled, value)
        if polled.status != 400:
            assert polled.status == (304 if names_ours(value, etag) else 200), (value, polled)
        evaluated = call(world.proxy_port, "POST", "/ofrep/v1/evaluate/flags",
                         [auth, ("If-None-Match", value)], b"{}")  # fmt: skip
        check_proxy(evaluated, value)
        if evaluated.status != 400:
            hit = names_ours(value, bulk_etag)
            assert evaluated.status == (304 if hit else 200), (value, evaluated)
        text = last_event_id.decode("utf-8", "replace").strip()
        if text.isascii() and text.isdigit():
            return  # a real resume point: test_proxy_streams covers those
        stream = call(world.proxy_port, "GET", "/sdk/v1/stream",
                      [auth, ("Last-Event-ID", last_event_id)])  # fmt: skip
        check_proxy(stream, last_event_id)
        if stream.status == 200:
            events = sse.Parser().feed(stream.body)
            assert events, stream
            assert (events[0].event, events[0].id) == ("put", version), events[0]

    await asyncio.to_thread(run)
