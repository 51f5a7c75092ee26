"""The provider follows the edge: changes, restarts, revocation, an edge down at start.

Real pipeline: changes are made through the control API, replicated by syncd into
Valkey and streamed by the proxy; the provider runs its own thread and event loop.
"""

from __future__ import annotations

import asyncio
from typing import Any

from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEvent
from openfeature.exception import ErrorCode
from openfeature.provider import ProviderStatus
from providerkit import Providers, central_version, shop
from support.edgekit import Central, StartProxy, eventually

from crivline.embedded import free_port


def flags() -> dict[str, Any]:
    return {
        "flags": {
            "banner": {
                "state": "ENABLED",
                "variants": {"on": True, "off": False},
                "defaultVariant": "off",
            },
            "copy": {
                "state": "ENABLED",
                "variants": {"a": "Alpha", "b": "Beta"},
                "defaultVariant": "a",
                "targeting": {"if": [{"$ref": "pros"}, "b", "a"]},
            },
            "limit": {
                "state": "ENABLED",
                "variants": {"low": 10, "high": 100},
                "defaultVariant": "low",
            },
        },
        "$evaluators": {"pros": {"in": [{"var": "plan"}, ["pro"]]}},
    }


PRO = EvaluationContext("u-1", {"plan": "pro"})
ENTERPRISE = EvaluationContext("u-2", {"plan": "enterprise"})


async def test_changes_through_control_reach_the_provider_with_the_changed_keys(
    central: Central, start_proxy: StartProxy, providers: Providers
) -> None:
    proxy, server, _ = await shop(central, start_proxy, flags())
    installed = await providers(proxy.url, server)
    client = installed.client
    assert installed.client.get_provider_status() is ProviderStatus.READY
    assert client.get_boolean_value("banner", True) is False

    version = await central.set_state(
        "shop", "banner", "prod", state="ENABLED", defaultVariant="on"
    )
    await installed.event(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED)
    assert installed.provider.version == version
    changed = installed.seen(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED)
    assert changed[0].flags_changed == ["banner"]
    assert changed[0].metadata == {"version": version}
    assert client.get_boolean_value("banner", False) is True

    # A segment edit changes the flags that reach it through $ref, and only those.
    assert client.get_string_value("copy", "?", ENTERPRISE) == "Alpha"
    await central.ok(
        "PUT",
        "/projects/shop/segments/pros",
        {"definition": {"in": [{"var": "plan"}, ["pro", "enterprise"]]}},
    )
    await installed.event(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, 2)
    assert installed.seen(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED)[1].flags_changed == ["copy"]
    assert client.get_string_value("copy", "?", ENTERPRISE) == "Beta"

    # Archiving a flag removes it: FLAG_NOT_FOUND, and a change event naming it.
    await central.ok("POST", "/projects/shop/flags/limit/archive")
    await installed.event(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, 3)
    assert installed.seen(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED)[2].flags_changed == [
        "limit"
    ]
    details = client.get_integer_details("limit", -1)
    assert (details.value, details.error_code) == (-1, ErrorCode.FLAG_NOT_FOUND)

    stats = installed.provider.sync_stats
    assert stats is not None
    assert (stats.puts, stats.patches, stats.gaps) == (1, 3, 0)
    assert installed.provider.version == await central_version(central)


async def test_a_proxy_restart_mid_stream_loses_nothing_and_resumes(
    central: Central, start_proxy: StartProxy, providers: Providers
) -> None:
    proxy, server, _ = await shop(central, start_proxy, flags())
    port = int(proxy.url.rsplit(":", 1)[1])
    installed = await providers(proxy.url, server, stale_after=0.5)
    client = installed.client
    first = installed.provider.version
    assert first is not None

    await proxy.stop()
    await installed.event(ProviderEvent.PROVIDER_STALE)
    assert installed.client.get_provider_status() is ProviderStatus.STALE
    assert client.get_integer_value("limit", -1) == 10  # still served from memory
    await central.set_state("shop", "banner", "prod", state="ENABLED", defaultVariant="on")
    await central.set_state("shop", "limit", "prod", state="ENABLED", defaultVariant="high")
    last = await central.set_state("shop", "banner", "prod", state="DISABLED", defaultVariant="on")

    await start_proxy(proxy_port=port)
    await installed.at_version(last)
    await installed.event(ProviderEvent.PROVIDER_READY, 2)  # the SDK's first, then ours
    stats = installed.provider.sync_stats
    assert stats is not None
    # Fallback polls may have caught up first; the stream resumes all the same.
    await eventually(lambda: stats.resumes >= 1, what="the stream resumed")
    assert installed.client.get_provider_status() is ProviderStatus.READY

    assert stats.puts == 1  # the first connection's: resuming never needed a whole flag set
    assert stats.gaps == 0
    changes = installed.seen(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED)
    versions = [int(c.metadata["version"]) for c in changes]
    assert versions == sorted(set(versions))
    assert versions[-1] == last
    assert {key for c in changes for key in c.flags_changed or ()} == {"banner", "limit"}
    assert client.get_integer_value("limit", -1) == 100
    banner = client.get_boolean_details("banner", True)
    assert (banner.value, banner.reason) == (True, "DISABLED")


async def test_a_revoked_key_moves_the_provider_to_a_fatal_error(
    central: Central, start_proxy: StartProxy, providers: Providers
) -> None:
    proxy, _, _ = await shop(central, start_proxy, flags())
    server, key_id = await central.create_key("shop", "prod", "server")
    installed = await providers(proxy.url, server)
    assert installed.client.get_integer_value("limit", -1) == 10

    await central.ok("DELETE", f"/projects/shop/environments/prod/keys/{key_id}")
    await installed.event(ProviderEvent.PROVIDER_ERROR)
    error = installed.seen(ProviderEvent.PROVIDER_ERROR)[0]
    assert error.error_code is ErrorCode.PROVIDER_FATAL
    assert "refused the server key (HTTP 401)" in (error.message or "")
    assert installed.client.get_provider_status() is ProviderStatus.FATAL
    details = installed.client.get_integer_details("limit", -1)
    assert (details.value, details.error_code) == (-1, ErrorCode.PROVIDER_FATAL)


async def test_an_edge_down_at_start_is_an_error_then_ready_when_it_answers(
    central: Central, start_proxy: StartProxy, providers: Providers
) -> None:
    port = free_port()  # nothing listens there yet
    await central.ok("POST", "/projects", {"key": "shop", "name": "Shop"})
    await central.ok("POST", "/projects/shop/environments", {"key": "prod"})
    await central.ok("POST", "/projects/shop/environments/prod/import", flags())
    server, _ = await central.create_key("shop", "prod", "server")

    waiting = await providers(f"http://127.0.0.1:{port}", server, wait=False, init_timeout=0.5)
    await waiting.event(ProviderEvent.PROVIDER_ERROR)
    error = waiting.seen(ProviderEvent.PROVIDER_ERROR)[0]
    assert error.error_code is ErrorCode.PROVIDER_NOT_READY
    assert waiting.client.get_provider_status() is ProviderStatus.ERROR
    details = waiting.client.get_integer_details("limit", -1)
    assert (details.value, details.error_code) == (-1, ErrorCode.PROVIDER_NOT_READY)
    stats = waiting.provider.sync_stats
    assert stats is not None
    await eventually(lambda: stats.polls >= 2, what="fallback polls while the stream is down")

    await start_proxy(proxy_port=port)
    await waiting.event(ProviderEvent.PROVIDER_READY)
    assert waiting.client.get_provider_status() is ProviderStatus.READY
    assert waiting.client.get_integer_value("limit", -1) == 10


async def test_polling_mode_follows_changes_with_etags(
    central: Central, start_proxy: StartProxy, providers: Providers
) -> None:
    proxy, server, _ = await shop(central, start_proxy, flags())
    installed = await providers(proxy.url, server, stream=False, poll_interval=0.1)
    stats = installed.provider.sync_stats
    assert stats is not None
    await eventually(lambda: stats.polls_not_modified >= 2, what="polls answered 304")
    version = await central.set_state(
        "shop", "limit", "prod", state="ENABLED", defaultVariant="high"
    )
    await installed.event(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED)
    assert installed.seen(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED)[0].flags_changed == [
        "limit"
    ]
    assert installed.provider.version == version
    assert installed.client.get_integer_value("limit", -1) == 100
    assert stats.streams_opened == 0


async def test_a_snapshot_file_serves_a_cold_start_without_the_edge(
    central: Central, start_proxy: StartProxy, providers: Providers, tmp_path: Any
) -> None:
    proxy, server, _ = await shop(central, start_proxy, flags())
    port = int(proxy.url.rsplit(":", 1)[1])
    path = tmp_path / "flags.json"
    first = await providers(proxy.url, server, snapshot_path=path)
    version = await central.set_state(
        "shop", "limit", "prod", state="ENABLED", defaultVariant="high"
    )
    await first.at_version(version)
    await eventually(lambda: path.exists(), what="the snapshot file")
    await asyncio.to_thread(first.provider.shutdown)
    await proxy.stop()

    cold = await providers(proxy.url, server, snapshot_path=path, init_timeout=0.5)
    assert cold.client.get_provider_status() is ProviderStatus.READY
    assert cold.provider.version == version
    assert cold.client.get_integer_value("limit", -1) == 100

    later = await central.set_state("shop", "banner", "prod", state="ENABLED", defaultVariant="on")
    await start_proxy(proxy_port=port)
    await cold.at_version(later)
    stats = cold.provider.sync_stats
    assert stats is not None
    await eventually(lambda: stats.resumes >= 1, what="the stream resumed from the file's version")
    assert stats.puts == 0
    assert cold.client.get_boolean_value("banner", False) is True
