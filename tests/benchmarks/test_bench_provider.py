"""The in-process provider against remote evaluation, side by side (``make bench-micro``).

One group per kind of flag — static, targeted (segments, a plan list and a split in one
rule: the load test's targeted flag), fractional — each with ``in-process`` (the
OpenFeature SDK with :class:`CrivlineProvider`) and ``ofrep`` (the SDK with
``openfeature-provider-ofrep`` against ``crivline proxy`` on this machine, keep-alive
HTTP): the same flag, the same context, the same SDK, in the same run, so their
medians compare directly. ``provider-only`` calls the provider's resolve method without
the SDK (its hooks and bookkeeping), to show what the provider itself costs. The flag
set is the load test's 100 flags (``loadtests/ltflags.py``) fed into the test Valkey the
way syncd writes it.

With ``--benchmark-disable`` (the default in ``make test``) each runs once, as a test
that both sides give the same answer.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from subprocess import DEVNULL
from typing import Any

import aiohttp
import pytest
from openfeature import api
from openfeature.client import OpenFeatureClient
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.evaluation_context import EvaluationContext
from redis.asyncio import Redis
from support.benchset import ltflags

from crivline import tokens
from crivline.edge_store import EdgeStore
from crivline.embedded import free_port
from crivline.keyspace import Keyspace
from crivline.snapshot import EdgeKey, EnvironmentSnapshot
from crivline_openfeature import CrivlineProvider

pytestmark = pytest.mark.benchmark

PREFIX = "bench-provider:"
KINDS: dict[str, str] = {
    "static": "release-toggle-1",
    "targeted": ltflags.TARGETED_FLAG,
    "fractional": "rollout-7",
}
CONTEXT = EvaluationContext(
    "user-5", {k: v for k, v in ltflags.context(5).items() if k != "targetingKey"}
)


@dataclass
class Clients:
    in_process: OpenFeatureClient
    ofrep: OpenFeatureClient
    provider: CrivlineProvider


@pytest.fixture(scope="module")
async def clients(valkey_server: Any) -> AsyncIterator[Clients]:
    """A `crivline proxy` process serving the bench flag set, and an SDK client for each
    provider."""
    redis = Redis.from_url(valkey_server.url)
    environment = str(uuid.uuid4())
    server = tokens.generate(tokens.SecretKind.SERVER)
    client = tokens.generate(tokens.SecretKind.CLIENT)
    snapshot = EnvironmentSnapshot(
        environment, "production", str(uuid.uuid4()), "bench", str(uuid.uuid4()), "acme", 1,
        ltflags.flag_set(),
        (
            EdgeKey(tokens.hex_digest(server), str(uuid.uuid4()), "server", None),
            EdgeKey(tokens.hex_digest(client), str(uuid.uuid4()), "client", None),
        ),
    )  # fmt: skip
    store = EdgeStore(redis, Keyspace(PREFIX, "bench"))
    await store.apply(snapshot, base_version=0, base_flag_set=None, committed_at=time.time())
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRIVLINE_")}
    env.update(
        CRIVLINE_REDIS_URL=valkey_server.url,
        CRIVLINE_PROXY_PORT=str(port),
        CRIVLINE_KEY_PREFIX=PREFIX,
        CRIVLINE_EDGE_ID="bench",
        CRIVLINE_RATE_LIMIT="0",
        CRIVLINE_LOG_LEVEL="WARNING",
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "crivline", "proxy", env=env, stdout=DEVNULL, stderr=DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    domains = (f"bench-in-process-{port}", f"bench-ofrep-{port}")
    in_process = CrivlineProvider(url, server)
    ofrep = OFREPProvider(url, headers_factory=lambda: {"X-API-Key": client})
    try:
        await _served(url, server)
        await asyncio.to_thread(api.set_provider_and_wait, in_process, domains[0])
        api.set_provider(ofrep, domains[1])
        yield Clients(api.get_client(domains[0]), api.get_client(domains[1]), in_process)
    finally:
        await asyncio.to_thread(in_process.shutdown)
        ofrep.session.close()  # an idle keep-alive connection would hold up the proxy's exit
        proc.terminate()
        await proc.wait()
        await store.remove(environment)
        await redis.aclose()


async def _served(url: str, key: str) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(300):
            try:
                async with session.get(url + "/sdk/v1/flags", headers={"X-API-Key": key}) as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError(f"the proxy at {url} never served the bench flag set")


def _evaluate(client: OpenFeatureClient, key: str) -> Callable[[], Any]:
    return lambda: client.get_boolean_details(key, False, CONTEXT)


@pytest.mark.parametrize("kind", list(KINDS))
def test_in_process(benchmark: Any, clients: Clients, kind: str) -> None:
    benchmark.group = f"provider-{kind}"
    benchmark.name = f"in-process[{kind}]"
    ours = benchmark(_evaluate(clients.in_process, KINDS[kind]))
    theirs = _evaluate(clients.ofrep, KINDS[kind])()
    assert ours.error_code is None, ours.error_message
    assert (ours.value, ours.variant, ours.reason) == (theirs.value, theirs.variant, theirs.reason)


@pytest.mark.parametrize("kind", list(KINDS))
def test_ofrep(benchmark: Any, clients: Clients, kind: str) -> None:
    benchmark.group = f"provider-{kind}"
    benchmark.name = f"ofrep[{kind}]"
    theirs = benchmark(_evaluate(clients.ofrep, KINDS[kind]))
    assert theirs.error_code is None, theirs.error_message


@pytest.mark.parametrize("kind", list(KINDS))
def test_provider_only(benchmark: Any, clients: Clients, kind: str) -> None:
    benchmark.group = f"provider-{kind}"
    benchmark.name = f"provider-only[{kind}]"
    resolve = clients.provider.resolve_boolean_details
    details = benchmark(resolve, KINDS[kind], False, CONTEXT)
    assert details.error_code is None, details.error_message
