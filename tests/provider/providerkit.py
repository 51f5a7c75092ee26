"""Helpers for the provider tests.

- ``providers``: makes :class:`CrivlineProvider` instances registered with the
  OpenFeature SDK under a domain of their own, records every provider event their client
  sees, and shuts them down at the end of the test. Everything that blocks (initialize,
  shutdown, evaluations through the SDK) runs in a worker thread: the proxy under test
  runs on the test's event loop.
- :func:`shop`: a project and environment made through the control API, a server key
  and a proxy serving them.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from openfeature import api
from openfeature.client import OpenFeatureClient
from openfeature.event import EventDetails, ProviderEvent
from openfeature.provider import ProviderStatus
from support.edgekit import Central, RunningProxy, StartProxy, eventually

from crivline_openfeature import CrivlineProvider

# Test timings: quick reconnects, a short grace period.
FAST = {
    "reconnect_min": 0.05,
    "reconnect_max": 0.3,
    "poll_interval": 0.5,
    "stale_after": 1.0,
    "init_timeout": 10.0,
}


@dataclass
class Recorded:
    event: ProviderEvent
    details: EventDetails


@dataclass
class Installed:
    provider: CrivlineProvider
    domain: str
    client: OpenFeatureClient
    events: list[Recorded] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def seen(self, event: ProviderEvent) -> list[EventDetails]:
        with self.lock:
            return [r.details for r in self.events if r.event is event]

    def kinds(self) -> list[ProviderEvent]:
        with self.lock:
            return [r.event for r in self.events]

    async def event(self, event: ProviderEvent, count: int = 1, within: float = 10.0) -> None:
        await eventually(
            lambda: len(self.seen(event)) >= count, within=within, what=f"{count}× {event.value}"
        )

    async def at_version(self, version: int, within: float = 10.0) -> None:
        await eventually(
            lambda: (self.provider.version or 0) >= version,
            within=within,
            what=f"the provider at version {version} (holds {self.provider.version})",
        )


Providers = Callable[..., Awaitable[Installed]]


@pytest.fixture
async def providers() -> AsyncIterator[Providers]:
    made: list[Installed] = []

    async def make(edge_url: str, key: str, *, wait: bool = True, **options: Any) -> Installed:
        provider = CrivlineProvider(edge_url, key, **{**FAST, **options})
        domain = f"crivline-{uuid.uuid4()}"
        # Initialization runs on the SDK's own thread; handlers added after it started
        # still hear of its outcome (the SDK replays the current status to them).
        api.set_provider(provider, domain)
        client = api.get_client(domain)
        installed = Installed(provider, domain, client)
        for event in ProviderEvent:

            def record(details: EventDetails, event: ProviderEvent = event) -> None:
                with installed.lock:
                    installed.events.append(Recorded(event, details))

            client.add_handler(event, record)
        made.append(installed)
        if wait:
            await eventually(
                lambda: client.get_provider_status() is ProviderStatus.READY,
                within=15,
                what="the provider ready",
            )
        return installed

    yield make
    for installed in made:
        await asyncio.to_thread(installed.provider.shutdown)


async def shop(
    central: Central, start_proxy: StartProxy, flag_set: dict[str, Any], **settings: Any
) -> tuple[RunningProxy, str, str]:
    """Project ``shop``, environment ``prod`` holding ``flag_set`` (imported through the
    control API), its server and client keys, and a proxy serving it: (proxy, server
    key, client key)."""
    await central.ok("POST", "/projects", {"key": "shop", "name": "Shop"})
    await central.ok("POST", "/projects/shop/environments", {"key": "prod"})
    # The flag set's own metadata is the environment's (flagSetId "shop/prod"): an import
    # naming another is refused, so the document's is left out.
    body = {k: v for k, v in flag_set.items() if k != "metadata"}
    await central.ok("POST", "/projects/shop/environments/prod/import", body)
    server, _ = await central.create_key("shop", "prod", "server")
    client, _ = await central.create_key("shop", "prod", "client")
    proxy = await start_proxy(**settings)

    async def served() -> bool:
        response = await proxy.get("/sdk/v1/flags", headers={"X-API-Key": server})
        await response.read()
        return response.status == 200

    await eventually(served, within=10, what="the environment served by the proxy")
    return proxy, server, client


async def central_version(central: Central) -> int:
    """The flag set's version of shop/prod: what a provider that holds it names."""
    env = await central.environment_id("shop", "prod")
    return int(
        await central.db.fetchval("SELECT flags_version FROM environments WHERE id = $1", env)
    )
