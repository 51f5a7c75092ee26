"""OFREP evaluation through a real proxy: shapes, statuses, ETags, limits, CORS."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from support.edgekit import Feeder, Key, RunningProxy, StartProxy, flag, make_key, new_env

from crivline.flags import compile_flag_set
from proxy import appkeys

FLAGS: dict[str, Any] = {
    "bool-flag": flag({"on": True, "off": False}, "on"),
    "string-flag": flag(
        {"winter": "Winter sale!", "plain": "Welcome"},
        "plain",
        targeting={"if": [{"ends_with": [{"var": "email"}, "@example.com"]}, "winter", "plain"]},
    ),
    "int-flag": flag(
        {"small": 10, "large": 50},
        "small",
        targeting={"if": [{"in": [{"var": "plan"}, ["pro", "enterprise"]]}, "large", "small"]},
    ),
    "float-flag": flag({"none": 0.0, "some": 0.15}, "some"),
    "object-flag": flag({"light": {"bg": "#fff"}, "dark": {"bg": "#111"}}, "dark"),
    "zero-flag": flag({"zero": 0, "one": 1}, "zero"),
    "disabled-flag": {**flag({"on": True, "off": False}, "on"), "state": "DISABLED"},
    "split-flag": flag({"a": "A", "b": "B"}, "a", targeting={"fractional": [["a", 50], ["b", 50]]}),
    "code-default-flag": flag({"on": True, "off": False}, None),
    "broken-flag": flag({"on": True}, "on", targeting={"no_such_operator": [1]}),
    "meta-flag": flag({"on": True}, "on", metadata={"team": "checkout", "tier": 2}),
}


@pytest.fixture
async def served(feeder: Feeder, start_proxy: StartProxy) -> tuple[RunningProxy, Key, Key, str]:
    env, server, client = new_env(), make_key("server"), make_key("client")
    await feeder.write(env, FLAGS, keys=[server, client])
    await feeder.synced()
    proxy = await start_proxy()
    return proxy, server, client, env


def expected(key: str, context: dict[str, Any]) -> dict[str, Any]:
    doc = {"flags": FLAGS, "metadata": {"flagSetId": "app/production"}}
    result: dict[str, Any] = orjson.loads(compile_flag_set(doc).evaluate(key, context).to_json())
    return result


CONTEXTS: list[dict[str, Any]] = [
    {},
    {"targetingKey": "user-1"},
    {"targetingKey": "user-2", "email": "a@example.com", "plan": "pro"},
    {"targetingKey": "user-3", "email": "b@elsewhere.org", "plan": "free"},
]


async def test_single_evaluation_matches_the_evaluator_for_every_kind(
    served: tuple[RunningProxy, Key, Key, str],
) -> None:
    proxy, _server, client, _env = served
    for key in FLAGS:
        for context in CONTEXTS:
            response = await proxy.post(
                f"/ofrep/v1/evaluate/flags/{key}", json={"context": context}, headers=client.headers
            )
            want = expected(key, context)
            body = await response.json()
            assert body == want, (key, context)
            assert response.status == (400 if "errorCode" in want else 200), (key, body)
            assert response.headers["Crivline-Version"] == "1"


async def test_single_evaluation_shapes(served: tuple[RunningProxy, Key, Key, str]) -> None:
    proxy, server, _client, _env = served

    async def evaluate(key: str, body: Any = None, **kwargs: Any) -> tuple[int, Any]:
        response = await proxy.post(
            f"/ofrep/v1/evaluate/flags/{key}", headers=server.headers, **kwargs
        )
        return response.status, await response.json()

    assert await evaluate("bool-flag") == (  # no body at all
        200,
        {
            "key": "bool-flag",
            "value": True,
            "variant": "on",
            "reason": "STATIC",
            "metadata": {"flagSetId": "app/production"},  # the set's, under the flag's own
        },
    )
    status, body = await evaluate("disabled-flag", json={})
    assert status == 200
    assert "value" not in body
    assert body["reason"] == "DISABLED"
    status, body = await evaluate("code-default-flag", json={"context": {}})
    assert status == 200
    assert "value" not in body
    assert body["reason"] == "DEFAULT"
    status, body = await evaluate("float-flag", json={"context": {}})
    assert body["value"] == 0.15
    assert isinstance(body["value"], float)
    status, body = await evaluate("zero-flag", json={"context": {}})
    assert body["value"] == 0
    assert body["variant"] == "zero"
    status, body = await evaluate("meta-flag", json={"context": {}})
    assert body["metadata"] == {"flagSetId": "app/production", "team": "checkout", "tier": 2}

    status, body = await evaluate("nope", json={"context": {}})
    assert status == 404
    assert body == {
        "key": "nope",
        "errorCode": "FLAG_NOT_FOUND",
        "errorDetails": "flag 'nope' does not exist",
    }
    status, body = await evaluate("broken-flag", json={"context": {}})
    assert status == 400
    assert body["errorCode"] == "PARSE_ERROR"
    assert body["key"] == "broken-flag"

    status, body = await evaluate("bool-flag", data=b"{not json")
    assert status == 400
    assert body["key"] == "bool-flag"
    assert body["errorCode"] == "PARSE_ERROR"
    status, body = await evaluate("bool-flag", json={"context": [1, 2]})
    assert status == 400
    assert body == {
        "key": "bool-flag",
        "errorCode": "INVALID_CONTEXT",
        "errorDetails": "context must be a JSON object, not an array",
    }


async def test_context_and_body_limits_are_clear_errors(
    feeder: Feeder, start_proxy: StartProxy
) -> None:
    env, key = new_env(), make_key("client")
    await feeder.write(env, FLAGS, keys=[key])
    proxy = await start_proxy(max_body_bytes=2048)
    deep: Any = "leaf"
    for _ in range(20):
        deep = {"x": deep}
    response = await proxy.post(
        "/ofrep/v1/evaluate/flags/bool-flag", json={"context": {"deep": deep}}, headers=key.headers
    )
    assert response.status == 400
    body = await response.json()
    assert body["errorCode"] == "INVALID_CONTEXT"
    assert body["errorDetails"] == "context is nested more than 16 levels deep"

    huge = await proxy.post(
        "/ofrep/v1/evaluate/flags",
        data=orjson.dumps({"context": {"blob": "x" * 5000}}),
        headers={**key.headers, "Content-Type": "application/json"},
    )
    assert huge.status == 413
    body = await huge.json()
    assert body["errorCode"] == "PAYLOAD_TOO_LARGE"
    assert "limit is 2048" in body["errorDetails"]


async def test_bulk_evaluation_etag_covers_flags_and_context(
    served: tuple[RunningProxy, Key, Key, str], feeder: Feeder
) -> None:
    proxy, _server, client, env = served
    context = {"context": {"targetingKey": "user-2", "email": "a@example.com"}}
    first = await proxy.post("/ofrep/v1/evaluate/flags", json=context, headers=client.headers)
    assert first.status == 200
    body = await first.json()
    assert [f["key"] for f in body["flags"]] == sorted(FLAGS)  # canonical (stored) order
    for item in body["flags"]:
        assert item == expected(item["key"], context["context"])
    assert body["metadata"] == {"version": 1, "flagSetId": "app/production"}
    stream = body["eventStreams"][0]
    assert stream["type"] == "sse"
    assert stream["url"].startswith(proxy.url + "/ofrep/v1/events?ticket=")
    assert client.secret not in stream["url"]
    assert stream["inactivityDelaySec"] == 120
    etag = first.headers["ETag"]
    assert etag.startswith('W/"')

    same = await proxy.post(
        "/ofrep/v1/evaluate/flags", json=context, headers={**client.headers, "If-None-Match": etag}
    )
    assert same.status == 304
    assert same.headers["ETag"] == etag
    # The same context with its keys in another order and other white space is the same.
    reordered = b'{ "context" : {"email": "a@example.com",  "targetingKey": "user-2"} }'
    again = await proxy.post(
        "/ofrep/v1/evaluate/flags",
        data=reordered,
        headers={**client.headers, "If-None-Match": etag, "Content-Type": "application/json"},
    )
    assert again.status == 304
    assert again.headers["ETag"] == etag

    other = {"context": {"targetingKey": "user-3", "email": "b@elsewhere.org"}}
    changed_context = await proxy.post(
        "/ofrep/v1/evaluate/flags", json=other, headers={**client.headers, "If-None-Match": etag}
    )
    assert changed_context.status == 200
    assert changed_context.headers["ETag"] != etag

    version = await feeder.write(
        env, {**FLAGS, "bool-flag": flag({"on": True, "off": False}, "off")}
    )
    await proxy.loaded(env, version)
    changed_flags = await proxy.post(
        "/ofrep/v1/evaluate/flags", json=context, headers={**client.headers, "If-None-Match": etag}
    )
    assert changed_flags.status == 200
    assert changed_flags.headers["Crivline-Version"] == str(version)
    values = {f["key"]: f.get("value") for f in (await changed_flags.json())["flags"]}
    assert values["bool-flag"] is False


async def test_bulk_answers_are_cached_per_flag_set_and_context(
    served: tuple[RunningProxy, Key, Key, str],
) -> None:
    proxy, server, client, _env = served
    context = {"context": {"targetingKey": "u"}}
    first = await proxy.post("/ofrep/v1/evaluate/flags", json=context, headers=client.headers)
    second = await proxy.post("/ofrep/v1/evaluate/flags", json=context, headers=server.headers)
    assert (await first.json())["flags"] == (await second.json())["flags"]
    assert len(proxy[appkeys.BULK_CACHE]) == 1
    bad = await proxy.post("/ofrep/v1/evaluate/flags", data=b"[1]", headers=client.headers)
    assert bad.status == 400
    assert await bad.json() == {
        "errorCode": "PARSE_ERROR",
        "errorDetails": 'the request body must be a JSON object like {"context": {...}}',
    }


async def test_cors_preflight_needs_no_key_and_responses_expose_headers(
    served: tuple[RunningProxy, Key, Key, str],
) -> None:
    proxy, _server, client, _env = served
    preflight = await proxy.session.options(
        proxy.url + "/ofrep/v1/evaluate/flags",
        headers={
            "Origin": "https://app.example.com",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, authorization, if-none-match",
        },
    )
    assert preflight.status == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "*"
    allowed = preflight.headers["Access-Control-Allow-Headers"].lower()
    for name in ("content-type", "authorization", "x-api-key", "if-none-match"):
        assert name in allowed
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]

    response = await proxy.post(
        "/ofrep/v1/evaluate/flags",
        json={"context": {}},
        headers={**client.headers, "Origin": "https://app.example.com"},
    )
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    exposed = response.headers["Access-Control-Expose-Headers"]
    assert "ETag" in exposed
    assert "Retry-After" in exposed
    refused = await proxy.post("/ofrep/v1/evaluate/flags", json={}, headers={"Origin": "x"})
    assert refused.status == 401
    assert refused.headers["Access-Control-Allow-Origin"] == "*"  # the browser can read why


async def test_time_dependent_targeting_is_never_served_from_the_bulk_cache(
    feeder: Feeder, start_proxy: StartProxy
) -> None:
    env, key = new_env(), make_key("client")
    clock = flag(
        {"early": "early", "late": "late"},
        "early",
        targeting={"if": [{">": [{"var": "$flagd.timestamp"}, 0]}, "late", "early"]},
    )
    await feeder.write(env, {"clock": clock}, keys=[key])
    proxy = await start_proxy()
    state = proxy[appkeys.CACHE].get(env)
    assert state is not None
    assert state.time_dependent
    for _ in range(2):
        response = await proxy.post(
            "/ofrep/v1/evaluate/flags", json={"context": {}}, headers=key.headers
        )
        assert (await response.json())["flags"][0]["value"] == "late"
    assert len(proxy[appkeys.BULK_CACHE]) == 0
    again = await proxy.post(
        "/ofrep/v1/evaluate/flags",
        json={"context": {}},
        headers={**key.headers, "If-None-Match": response.headers["ETag"]},
    )
    assert again.status == 304  # same answer bytes: still a 304, computed from them


async def test_a_repeated_json_key_is_refused_by_name(
    served: tuple[RunningProxy, Key, Key, str],
) -> None:
    proxy, _server, client, _env = served
    ambiguous = b'{"context": {"targetingKey": "u1", "plan": "pro", "plan": "free"}}'
    for path in ("/ofrep/v1/evaluate/flags/bool-flag", "/ofrep/v1/evaluate/flags"):
        response = await proxy.post(
            path, data=ambiguous, headers={**client.headers, "Content-Type": "application/json"}
        )
        assert response.status == 400, path
        body = await response.json()
        assert body["errorCode"] == "PARSE_ERROR", body
        assert "'plan' more than once" in body["errorDetails"], body


async def test_a_broken_gzip_body_is_a_parse_error(
    served: tuple[RunningProxy, Key, Key, str],
) -> None:
    proxy, _server, client, _env = served
    response = await proxy.post(
        "/ofrep/v1/evaluate/flags/bool-flag",
        data=b"\x1f\x8b not really gzip",
        headers={
            **client.headers,
            "Content-Type": "application/json",
            "Content-Encoding": "gzip",
        },
    )
    assert response.status == 400
    body = await response.json()
    assert body["errorCode"] == "PARSE_ERROR", body
    assert "Content-Encoding" in body["errorDetails"]
