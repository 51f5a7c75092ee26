"""The OpenFeature SDK's provider contract, through the SDK itself (openfeature-sdk
ships no provider test kit, so these drive its public client API): evaluation details,
hooks in order with what they are owed, a hook's context reaching the evaluation,
the async client, events, and evaluation from many threads while the flag set changes."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import EventDetails, ProviderEvent
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import FlagEvaluationDetails, FlagType, Reason
from openfeature.hook import Hook, HookContext, HookHints
from providerkit import Providers, shop
from support.edgekit import Central, StartProxy

FLAGS: dict[str, Any] = {
    "flags": {
        "plan-copy": {
            "state": "ENABLED",
            "variants": {"basic": "Basic", "pro": "Pro"},
            "defaultVariant": "basic",
            "targeting": {"if": [{"==": [{"var": "plan"}, "pro"]}, "pro", None]},
            "metadata": {"owner": "growth"},
        },
        "toggle": {
            "state": "ENABLED",
            "variants": {"on": True, "off": False},
            "defaultVariant": "off",
        },
    },
    "metadata": {"flagSetId": "shop/prod"},
}


class Recorder(Hook):
    def __init__(self, inject: dict[str, Any] | None = None) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.inject = inject

    def before(self, hook_context: HookContext, hints: HookHints) -> EvaluationContext | None:
        self.calls.append(("before", (hook_context.flag_key, hook_context.flag_type)))
        return EvaluationContext(attributes=self.inject) if self.inject else None

    def after(
        self, hook_context: HookContext, details: FlagEvaluationDetails[Any], hints: HookHints
    ) -> None:
        self.calls.append(("after", details))

    def error(self, hook_context: HookContext, exception: Exception, hints: HookHints) -> None:
        self.calls.append(("error", exception))

    def finally_after(
        self, hook_context: HookContext, details: FlagEvaluationDetails[Any], hints: HookHints
    ) -> None:
        self.calls.append(("finally", details))


async def test_details_hooks_and_async_calls_follow_the_sdk_contract(
    central: Central, start_proxy: StartProxy, providers: Providers
) -> None:
    proxy, server, _ = await shop(central, start_proxy, FLAGS)
    installed = await providers(proxy.url, server)
    client = installed.client
    assert client.provider.get_metadata().name == "crivline"
    recorder = Recorder(inject={"plan": "pro"})  # a hook's context reaches the evaluation
    client.add_hooks([recorder])

    details = client.get_string_details("plan-copy", "fallback", EvaluationContext("u-1"))
    assert details.flag_key == "plan-copy"
    assert (details.value, details.variant, details.reason) == ("Pro", "pro", "TARGETING_MATCH")
    assert dict(details.flag_metadata) == {
        "flagSetId": "shop/prod",
        "fractionalBucketing": "v3",  # a new environment buckets as flagd does today
        "owner": "growth",
    }
    assert details.error_code is None
    assert [name for name, _ in recorder.calls] == ["before", "after", "finally"]
    assert recorder.calls[0][1] == ("plan-copy", FlagType.STRING)
    assert recorder.calls[1][1].value == "Pro"

    recorder.calls.clear()
    missing = client.get_boolean_details("no-such-flag", True)
    assert (missing.value, missing.error_code, missing.reason) == (
        True,
        ErrorCode.FLAG_NOT_FOUND,
        Reason.ERROR,
    )
    assert [name for name, _ in recorder.calls] == ["before", "error", "finally"]

    recorder.calls.clear()
    mismatch = client.get_integer_details("toggle", 7)
    assert (mismatch.value, mismatch.error_code) == (7, ErrorCode.TYPE_MISMATCH)
    assert [name for name, _ in recorder.calls] == ["before", "error", "finally"]

    # The async client answers the same, without blocking the loop on I/O.
    assert await client.get_string_value_async("plan-copy", "fallback") == "Pro"
    async_details = await client.get_boolean_details_async("toggle", True)
    assert (async_details.value, async_details.variant, async_details.reason) == (
        False,
        "off",
        "STATIC",
    )


async def test_global_and_client_handlers_hear_changes_while_threads_evaluate(
    central: Central, start_proxy: StartProxy, providers: Providers
) -> None:
    proxy, server, _ = await shop(central, start_proxy, FLAGS)
    installed = await providers(proxy.url, server)
    heard: list[EventDetails] = []
    lock = threading.Lock()

    def on_change(details: EventDetails) -> None:
        with lock:
            heard.append(details)

    api.add_handler(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, on_change)
    stop = threading.Event()
    answers: list[set[Any]] = []

    def evaluate() -> None:
        client = api.get_client(installed.domain)
        seen: set[Any] = set()
        while not stop.is_set():
            details = client.get_boolean_details("toggle", None)  # type: ignore[arg-type]
            assert details.error_code is None, details.error_message
            seen.add(details.value)
        answers.append(seen)

    threads = [threading.Thread(target=evaluate) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        for i in range(4):
            await central.set_state(
                "shop",
                "toggle",
                "prod",
                state="ENABLED",
                defaultVariant="on" if i % 2 == 0 else "off",
            )
            # One change at a time: syncd merges a burst of commits into one apply, which
            # would be one event for several writes.
            await installed.event(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, i + 1)
    finally:
        stop.set()
        for thread in threads:
            await asyncio.to_thread(thread.join, 10)
        api.remove_handler(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, on_change)
    assert len(answers) == 2
    assert all(seen <= {True, False} for seen in answers)
    with lock:
        mine = [d for d in heard if d.provider_name == "crivline"]
    assert len(mine) >= 4
    assert all(d.flags_changed == ["toggle"] for d in mine)
