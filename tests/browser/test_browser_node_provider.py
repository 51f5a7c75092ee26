"""The Node server SDK with ``@openfeature/ofrep-provider``, unmodified, against the proxy.

A Node script (``js/server_provider.mjs``) evaluates every flag of the shop — each kind,
targeted, split, disabled, and one that does not exist — in several contexts through
the proxy's OFREP single-flag endpoint; every answer must equal what our own evaluator
says for the flag set the proxy serves.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from browserkit import JS, expected_details, open_shop, sdk_flags
from support.edgekit import Central, StartProxy

from crivline.flags import compile_flag_set
from proxy import appkeys

OLD_PROVIDER_MESSAGE = "The OFREP response does not match the expected format"

CONTEXTS: list[dict[str, Any]] = [
    {},
    {"targetingKey": "user-1"},
    {"targetingKey": "user-2", "email": "x@beta.example", "plan": "pro"},
    {"targetingKey": "user-3", "plan": "free"},
    {"targetingKey": "user-42", "email": "y@other.example"},
]


async def run_node(node: str, config: dict[str, Any], within: float = 30.0) -> Any:
    process = await asyncio.create_subprocess_exec(
        node,
        str(JS / "server_provider.mjs"),
        cwd=JS,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(orjson.dumps(config)), within)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"the Node script did not finish within {within}s") from None
    assert process.returncode == 0, err.decode()
    return orjson.loads(out)


async def test_node_server_provider_evaluates_every_kind_of_flag(
    node: str, central: Central, start_proxy: StartProxy
) -> None:
    shop = await open_shop(central, start_proxy)
    compiled = compile_flag_set(await shop.flag_set())
    flags = sdk_flags()
    results = await run_node(
        node,
        {
            "baseUrl": shop.proxy.url,
            "key": shop.server_key,
            "flags": [{k: f[k] for k in ("key", "type", "default")} for f in flags],
            "contexts": CONTEXTS,
        },
    )
    assert len(results) == len(flags) * len(CONTEXTS)
    by_key = {f["key"]: f for f in flags}
    reasons, kinds = set(), set()
    for got in results:
        flag, context = by_key[got["key"]], CONTEXTS[got["context"]]
        want = expected_details(compiled, flag, context)
        where = (got["key"], context, got)
        assert got["value"] == want["value"], where
        if flag["kind"] == "integer":
            assert isinstance(got["value"], int), where  # JSON kept it whole
        if want["errorCode"] is not None:
            assert got["errorCode"] == want["errorCode"], where
            reasons.add("ERROR:" + want["errorCode"])
            continue
        if want["codeDefault"] and got["errorCode"] is not None:
            # @openfeature/ofrep-provider 0.1.3 (the newest release) predates OFREP's
            # ADR-0006: an answer without "value" (a disabled flag, no default variant)
            # fails its response check, so the SDK falls back to the code default — the
            # value it should use anyway, for another reason.
            assert got["errorCode"] == "GENERAL", where
            assert got["errorMessage"] == OLD_PROVIDER_MESSAGE, where
            reasons.add(want["reason"])
            continue
        assert got["errorCode"] is None, where
        assert got["variant"] == want["variant"], where
        assert got["reason"] == want["reason"], where
        reasons.add(want["reason"])
        kinds.add(flag["kind"])
    assert kinds == {"boolean", "string", "integer", "float", "object"}
    assert {"STATIC", "TARGETING_MATCH", "DEFAULT", "DISABLED"} <= reasons
    assert "ERROR:FLAG_NOT_FOUND" in reasons
    # It really went to the proxy: one OFREP single-flag request per evaluation.
    requests = shop.proxy[appkeys.METRICS].requests.values
    single = sum(n for key, n in requests.items() if key[0] == "ofrep_flag")
    assert single == len(results)
