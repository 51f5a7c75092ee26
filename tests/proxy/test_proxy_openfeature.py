"""Real clients, unmodified: the OpenFeature Python SDK with openfeature-provider-ofrep.

Flags of every kind are created through the control API, reach the proxy through syncd,
and are evaluated by the SDK over HTTP. Each answer must equal what our evaluator says
for the flag set the proxy serves. The provider is synchronous (requests), so it runs in
a worker thread while the proxy runs on the test's event loop.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import orjson
from openfeature import api
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.evaluation_context import EvaluationContext
from openfeature.flag_evaluation import ErrorCode as OFErrorCode
from openfeature.flag_evaluation import FlagEvaluationDetails
from support.edgekit import Central, RunningProxy, StartProxy
from support.waiting import eventually

from crivline.flags import compile_flag_set
from proxy import appkeys

FLAGS: list[dict[str, Any]] = [
    {"key": "bool-static", "type": "boolean", "variants": {"on": True, "off": False}},
    {"key": "string-targeted", "type": "string", "variants": {"a": "Alpha", "b": "Beta"}},
    {"key": "int-targeted", "type": "integer", "variants": {"small": 10, "large": 50}},
    {"key": "float-flag", "type": "float", "variants": {"low": 0.25, "high": 1.5}},
    {"key": "object-flag", "type": "object", "variants": {"light": {"bg": "#fff"}, "dark": {}}},
    {"key": "disabled-flag", "type": "boolean", "variants": {"on": True, "off": False}},
    {"key": "split-flag", "type": "string", "variants": {"red": "red", "blue": "blue"}},
    {"key": "code-default", "type": "integer", "variants": {"one": 1, "zero": 0}},
]

STATES: dict[str, dict[str, Any]] = {
    "bool-static": {"state": "ENABLED", "defaultVariant": "on"},
    "string-targeted": {
        "state": "ENABLED",
        "defaultVariant": "a",
        "targeting": {"if": [{"ends_with": [{"var": "email"}, "@beta.example"]}, "b", "a"]},
    },
    "int-targeted": {
        "state": "ENABLED",
        "defaultVariant": "small",
        "targeting": {"if": [{"==": [{"var": "plan"}, "pro"]}, "large", None]},
    },
    "float-flag": {"state": "ENABLED", "defaultVariant": "high"},
    "object-flag": {"state": "ENABLED", "defaultVariant": "light"},
    "disabled-flag": {"state": "DISABLED", "defaultVariant": "on"},
    "split-flag": {
        "state": "ENABLED",
        "defaultVariant": "red",
        "targeting": {"fractional": [["red", 50], ["blue", 50]]},
    },
    "code-default": {"state": "ENABLED", "defaultVariant": None},
}

DEFAULTS: dict[str, Any] = {
    "boolean": True,
    "string": "default",
    "integer": -1,
    "float": -1.0,
    "object": {"default": True},
}

CONTEXTS = [
    EvaluationContext(),
    EvaluationContext(targeting_key="user-1"),
    EvaluationContext(
        targeting_key="user-2", attributes={"email": "x@beta.example", "plan": "pro"}
    ),
    EvaluationContext(targeting_key="user-3", attributes={"plan": "free"}),
    EvaluationContext(targeting_key="user-40", attributes={"email": "y@other.example"}),
]


async def served_shop(central: Central, start_proxy: StartProxy, **settings: Any) -> Any:
    await central.ok("POST", "/projects", {"key": "shop", "name": "Shop"})
    await central.ok("POST", "/projects/shop/environments", {"key": "prod"})
    for definition in FLAGS:
        first = next(iter(definition["variants"]))
        await central.ok("POST", "/projects/shop/flags", {**definition, "defaultVariant": first})
        await central.set_state("shop", definition["key"], "prod", **STATES[definition["key"]])
    server, _ = await central.create_key("shop", "prod", "server")
    client, _ = await central.create_key("shop", "prod", "client")
    proxy = await start_proxy(**settings)

    async def ready() -> bytes | None:
        response = await proxy.get("/sdk/v1/flags", headers={"X-API-Key": server})
        body = await response.read()
        doc = orjson.loads(body) if response.status == 200 else {}
        return body if len(doc.get("flags", {})) == len(FLAGS) else None

    flag_set = await eventually(ready, within=10, what="every flag served")
    return proxy, client, orjson.loads(flag_set)


def evaluate_all_with_sdk(
    domain: str,
) -> list[tuple[str, dict[str, Any], FlagEvaluationDetails[Any]]]:
    client = api.get_client(domain)
    getters = {
        "boolean": client.get_boolean_details,
        "string": client.get_string_details,
        "integer": client.get_integer_details,
        "float": client.get_float_details,
        "object": client.get_object_details,
    }
    out = []
    for definition in [*FLAGS, {"key": "missing-flag", "type": "string"}]:
        for context in CONTEXTS:
            details = getters[definition["type"]](
                definition["key"], DEFAULTS[definition["type"]], context
            )
            flat = dict(context.attributes)
            if context.targeting_key:
                flat["targetingKey"] = context.targeting_key
            out.append((definition["type"], flat, details))
    return out


def install(proxy: RunningProxy, key: str) -> str:
    domain = f"proxy-{uuid.uuid4()}"
    api.set_provider(
        OFREPProvider(proxy.url, headers_factory=lambda: {"Authorization": f"Bearer {key}"}),
        domain,
    )
    return domain


async def test_the_sdk_gets_what_our_evaluator_says_for_every_kind_of_flag(
    central: Central, start_proxy: StartProxy
) -> None:
    proxy, client_key, flag_set = await served_shop(central, start_proxy)
    compiled = compile_flag_set(flag_set)
    domain = install(proxy, client_key)
    results = await asyncio.to_thread(evaluate_all_with_sdk, domain)
    assert len(results) == (len(FLAGS) + 1) * len(CONTEXTS)
    seen_reasons = set()
    for flag_type, context, details in results:
        ours = compiled.evaluate(details.flag_key, context)
        where = (details.flag_key, context)
        if ours.error_code is not None:
            assert details.error_code == OFErrorCode(ours.error_code.value), where
            assert details.value == DEFAULTS[flag_type], where
            seen_reasons.add("ERROR:" + ours.error_code.value)
            continue
        assert details.error_code is None, (where, details.error_message)
        expected = ours.value if ours.value is not None else DEFAULTS[flag_type]
        assert details.value == expected, where
        assert type(details.value) is type(expected), where
        assert details.reason == ours.reason.value, where
        assert details.variant == ours.variant, where
        seen_reasons.add(ours.reason.value)
    assert {"STATIC", "TARGETING_MATCH", "DEFAULT", "DISABLED"} <= seen_reasons
    assert "ERROR:FLAG_NOT_FOUND" in seen_reasons
    splits = {details.value for _t, _c, details in results if details.flag_key == "split-flag"} - {
        DEFAULTS["string"]
    }
    assert splits == {"red", "blue"}  # both buckets were hit by the contexts above


async def test_the_sdk_backs_off_on_429_for_exactly_retry_after(
    central: Central, start_proxy: StartProxy
) -> None:
    proxy, client_key, _ = await served_shop(central, start_proxy, rate_limit_per_second=3)
    domain = install(proxy, client_key)
    client = api.get_client(domain)
    requests_metric = proxy[appkeys.METRICS].requests

    def served_count() -> float:
        return sum(n for key, n in requests_metric.values.items() if key[0] == "ofrep_flag")

    def burst() -> list[FlagEvaluationDetails[bool]]:
        # The limiter's window is one epoch second: start right after a boundary.
        while time.time() % 1 > 0.5:
            time.sleep(0.01)
        return [client.get_boolean_details("bool-static", False) for _ in range(5)]

    details = await asyncio.to_thread(burst)
    assert [d.value for d in details[:3]] == [True, True, True]
    limited = details[3]
    assert limited.error_code == OFErrorCode.GENERAL
    assert limited.value is False
    assert "Rate limited, retry after: 1" in (limited.error_message or "")
    assert "paused due to TooManyRequests" in (details[4].error_message or "")
    hits = served_count()
    assert hits == 4  # the fifth call never left the SDK

    async def recovered() -> bool:
        result = await asyncio.to_thread(client.get_boolean_details, "bool-static", False)
        return result.value is True and result.error_code is None

    await eventually(recovered, within=5, what="the SDK to resume after Retry-After")
    assert served_count() == hits + 1  # paused calls cost the proxy nothing
