"""Differential: the provider's local answers equal the proxy's OFREP answers.

The 100-flag bench set (``loadtests/ltflags.py``: static toggles, ``if`` chains,
rollouts, ``sem_ver`` gates, ``$ref`` segments, objects) plus flags for the other
answers (disabled, no default variant, targeting that names no variant, a float), made
through the control API; a few thousand generated contexts, each evaluated through the
proxy's bulk OFREP endpoint and by the provider: value (and its type), variant,
reason, error code and message, metadata. A second test feeds definitions the control
API would refuse (PARSE_ERROR) straight into the edge, as an older or newer control
could have written them.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import FlagResolutionDetails, Reason
from providerkit import Providers, shop
from support.benchset import ltflags
from support.edgekit import Central, Feeder, StartProxy, flag, make_key, new_env

from crivline_openfeature import CrivlineProvider

CONTEXTS = 2_000
DEFAULTS: dict[str, Any] = {
    "boolean": False,
    "string": "code-default",
    "integer": -1,
    "float": -1.5,
    "object": {"code": "default"},
}


def flag_type(definition: dict[str, Any]) -> str:
    value = next(iter(definition["variants"].values()))
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, str):
        return "string"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    return "object"


def bench_set() -> dict[str, Any]:
    doc = ltflags.flag_set()
    doc["flags"].update(
        {
            "off-switch": {
                "state": "DISABLED",
                "variants": {"on": True, "off": False},
                "defaultVariant": "on",
                "metadata": {"owner": "ops"},
            },
            "no-default": {
                "state": "ENABLED",
                "variants": {"a": "A", "b": "B"},
                "defaultVariant": None,
                "targeting": {"if": [{"==": [{"var": "plan"}, "pro"]}, "b", None]},
            },
            "country-variant": {  # a country with no variant of its own: GENERAL
                "state": "ENABLED",
                "variants": {"DE": 1, "FR": 2},
                "defaultVariant": "DE",
                "targeting": {"var": "country"},
            },
            "ratio": {
                "state": "ENABLED",
                "variants": {"low": 0.25, "high": 1.5},
                "defaultVariant": "low",
                "targeting": {"fractional": [{"var": "email"}, ["low", 30], ["high", 70]]},
            },
        }
    )
    return doc


def context(n: int) -> dict[str, Any]:
    ctx = ltflags.context(n)
    if n % 7 == 0:
        del ctx["targetingKey"]
    if n % 11 == 0:
        ctx = {"targetingKey": f"only-key-{n}"}
    if n % 13 == 0:
        ctx["appVersion"] = "not-a-version"
    if n % 17 == 0:
        ctx["nested"] = {"team": {"name": f"t{n % 3}"}, "tags": ["a", n]}
    return ctx


def sdk_context(ctx: dict[str, Any]) -> EvaluationContext:
    attributes = {k: v for k, v in ctx.items() if k != "targetingKey"}
    return EvaluationContext(ctx.get("targetingKey"), attributes)


def resolve(
    provider: CrivlineProvider, kind: str, key: str, ctx: EvaluationContext
) -> FlagResolutionDetails[Any]:
    default = DEFAULTS[kind]
    if kind == "boolean":
        return provider.resolve_boolean_details(key, default, ctx)
    if kind == "string":
        return provider.resolve_string_details(key, default, ctx)
    if kind == "integer":
        return provider.resolve_integer_details(key, default, ctx)
    if kind == "float":
        return provider.resolve_float_details(key, default, ctx)
    return provider.resolve_object_details(key, default, ctx)


def check(item: dict[str, Any], kind: str, ours: FlagResolutionDetails[Any], where: Any) -> str:
    """Compare one OFREP answer with the provider's; returns the answer's kind."""
    default = DEFAULTS[kind]
    if "errorCode" in item:
        assert ours.error_code == ErrorCode(item["errorCode"]), where
        assert ours.error_message == item["errorDetails"], where
        assert ours.reason == Reason.ERROR, where
        assert ours.value == default, where
        assert ours.variant is None, where
        assert dict(ours.flag_metadata) == item.get("metadata", {}), where
        return "ERROR:" + item["errorCode"]
    expected = item.get("value", default)
    assert ours.error_code is None, (where, ours.error_message)
    assert ours.value == expected, where
    assert type(ours.value) is type(expected), where
    assert ours.variant == item["variant"], where
    assert ours.reason == item["reason"], where
    assert dict(ours.flag_metadata) == item["metadata"], where
    return str(item["reason"])


async def test_local_answers_equal_the_proxys_ofrep_answers(
    central: Central, start_proxy: StartProxy, providers: Providers
) -> None:
    doc = bench_set()
    kinds = {key: flag_type(definition) for key, definition in doc["flags"].items()}
    proxy, server, client_key = await shop(central, start_proxy, doc)
    installed = await providers(proxy.url, server)
    provider = installed.provider
    headers = {"Authorization": f"Bearer {client_key}", "Content-Type": "application/json"}

    async def bulk(ctx: dict[str, Any]) -> list[dict[str, Any]]:
        body = orjson.dumps({"context": ctx})
        response = await proxy.post("/ofrep/v1/evaluate/flags", data=body, headers=headers)
        assert response.status == 200, await response.text()
        answer = orjson.loads(await response.read())
        assert answer["metadata"]["version"] == provider.version
        return list(answer["flags"])

    seen: dict[str, int] = {}
    compared = 0
    for start in range(0, CONTEXTS, 50):
        contexts = [context(n) for n in range(start, start + 50)]
        answers = await asyncio.gather(*(bulk(ctx) for ctx in contexts))
        for ctx, items in zip(contexts, answers, strict=True):
            assert len(items) == len(kinds)
            evaluation_context = sdk_context(ctx)
            for item in items:
                kind = kinds[item["key"]]
                ours = resolve(provider, kind, item["key"], evaluation_context)
                outcome = check(item, kind, ours, (item["key"], ctx))
                seen[outcome] = seen.get(outcome, 0) + 1
                compared += 1
    assert compared == CONTEXTS * len(kinds)
    # every kind of answer was compared, many times (a fractional's choice is
    # TARGETING_MATCH, as flagd reports it)
    for outcome in ("STATIC", "TARGETING_MATCH", "DEFAULT", "DISABLED", "ERROR:GENERAL"):
        assert seen.get(outcome, 0) >= 100, (outcome, seen)

    missing = await proxy.post(
        "/ofrep/v1/evaluate/flags/no-such-flag", data=b'{"context": {}}', headers=headers
    )
    assert missing.status == 404
    check(
        orjson.loads(await missing.read()),
        "string",
        resolve(provider, "string", "no-such-flag", EvaluationContext()),
        "no-such-flag",
    )


async def test_definitions_the_control_api_refuses_answer_as_the_proxy_does(
    feeder: Feeder, start_proxy: StartProxy, providers: Providers
) -> None:
    env = new_env()
    key = make_key("server")
    flags: dict[str, Any] = {
        "bad-state": {"state": "MAYBE", "variants": {"a": 1}, "defaultVariant": "a"},
        "no-variants": {"state": "ENABLED", "variants": {}, "defaultVariant": "a"},
        "unknown-operator": flag(
            {"a": "A", "b": "B"}, "a", targeting={"frobnicate": [{"var": "x"}]}
        ),
        "default-is-a-ghost": flag({"a": True, "b": False}, "ghost"),
        "targeting-not-an-object": flag({"a": 1.5, "b": 2.5}, "a", targeting=["a"]),
        "with-metadata": flag(
            {"a": {"x": 1}, "b": [1, 2]}, "b", metadata={"owner": "team-a", "tier": 2}
        ),
    }
    await feeder.write(env, flags, keys=[key])
    await feeder.synced()
    proxy = await start_proxy()
    installed = await providers(proxy.url, key.secret)
    kinds = {
        "bad-state": "integer",
        "no-variants": "integer",
        "unknown-operator": "string",
        "default-is-a-ghost": "boolean",
        "targeting-not-an-object": "float",
        "with-metadata": "object",
    }
    seen = set()
    for ctx in ({}, {"targetingKey": "u-1", "x": 3}):
        for name, kind in kinds.items():
            response = await proxy.post(
                f"/ofrep/v1/evaluate/flags/{name}",
                data=orjson.dumps({"context": ctx}),
                headers=key.headers,
            )
            item = orjson.loads(await response.read())
            ours = resolve(installed.provider, kind, name, sdk_context(ctx))
            seen.add(check(item, kind, ours, (name, ctx)))
    assert {"ERROR:PARSE_ERROR", "ERROR:GENERAL", "STATIC"} <= seen


async def test_a_value_of_another_type_is_a_type_mismatch_like_the_ofrep_provider_says(
    central: Central, start_proxy: StartProxy, providers: Providers
) -> None:
    from openfeature import api
    from openfeature.contrib.provider.ofrep import OFREPProvider

    proxy, server, client_key = await shop(central, start_proxy, bench_set())
    ours = (await providers(proxy.url, server)).client
    domain = f"ofrep-{id(proxy)}"
    api.set_provider(
        OFREPProvider(proxy.url, headers_factory=lambda: {"X-API-Key": client_key}), domain
    )
    theirs = api.get_client(domain)
    ctx = sdk_context(ltflags.context(3))

    def both() -> list[tuple[Any, Any]]:
        calls = [
            lambda c: c.get_string_details("release-toggle-1", "x", ctx),
            lambda c: c.get_integer_details("copy-experiment-2", 0, ctx),
            lambda c: c.get_float_details("config-1", 0.5, ctx),
            lambda c: c.get_boolean_details("ratio", True, ctx),
            lambda c: c.get_object_details("app-version-gate-1", {"k": 1}, ctx),
        ]
        return [(call(ours), call(theirs)) for call in calls]

    for mine, reference in await asyncio.to_thread(both):
        assert mine.error_code == reference.error_code == ErrorCode.TYPE_MISMATCH
        assert mine.value == reference.value
        assert mine.reason == reference.reason == Reason.ERROR
