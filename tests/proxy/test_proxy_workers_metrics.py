"""``crivline proxy --workers 2``: ``/metrics`` answers for both workers, whichever answers.

Real processes: the supervisor, its two workers, the test Valkey. Fresh connections
(``force_close``) let SO_REUSEPORT spread requests, scrapes and streams over the workers;
the operator status page (per process, with its pid) shows which worker served what.
"""

from __future__ import annotations

import asyncio
import os
import signal
import stat
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from support.edgekit import Feeder, Key, SSEClient, flag, make_key, new_env
from support.proxyprocs import environ_of, proxy_env, start_workers
from support.waiting import eventually

from crivline.embedded import free_port
from proxy.supervisor import STARTUP_SECONDS

TOKEN = "operator-token-of-the-workers-test"
REQUESTS = 40
STREAMS = 6
# Each worker publishes its request counts every second (proxy.sharedmetrics): the
# scrapes agree once the last worker's last second is in.


def fresh() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))


async def flags(url: str, key: Key) -> None:
    async with fresh() as session, session.get(url + "/sdk/v1/flags", headers=key.headers) as r:
        assert r.status == 200, await r.text()


async def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    async with fresh() as session, session.get(url + "/metrics") as response:
        assert response.status == 200
        text = await response.text()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def total(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


async def status(url: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {TOKEN}", "Accept": "application/json"}
    async with fresh() as session, session.get(url + "/status", headers=headers) as response:
        assert response.status == 200
        body: dict[str, Any] = await response.json()
        return body


async def workers_seen(url: str, count: int = 2, tries: int = 40) -> dict[int, dict[str, Any]]:
    """The status of each worker that answered one of ``tries`` fresh connections."""
    seen: dict[int, dict[str, Any]] = {}
    for _ in range(tries):
        body = await status(url)
        seen[body["pid"]] = body
        if len(seen) >= count:
            break
    return seen


def sdk_flags_served(body: dict[str, Any]) -> float:
    return sum(r["requests"] for r in body["traffic"]["routes"] if r["route"] == "sdk_flags")


async def every_scrape(url: str, check: Any, scrapes: int = 8) -> bool:
    """``check`` holds for ``scrapes`` scrapes in a row, over fresh connections."""
    for _ in range(scrapes):
        if not check(await scrape(url)):
            return False
    return True


async def test_workers_answer_one_metrics_exposition_that_survives_a_killed_worker(
    tmp_path: Path,
    feeder: Feeder,
    redis_url: str,
    crivline_cmd: list[str],
    processes: list[asyncio.subprocess.Process],
) -> None:
    env, key = new_env(), make_key("server")
    await feeder.write(env, {"a": flag({"on": True}, "on")}, keys=[key])
    port = free_port()
    log = tmp_path / "proxy.log"
    settings = proxy_env(redis_url, port, CRIVLINE_OPERATOR_TOKEN=TOKEN)
    proc = await start_workers(crivline_cmd, settings, log, processes)
    url = f"http://127.0.0.1:{port}"
    first = await eventually(
        lambda: workers_seen(url),
        within=20,
        what="both workers' status",
        tolerate=(aiohttp.ClientError,),
    )
    assert len(first) == 2
    # The folder the supervisor made for its workers: private, and only theirs.
    folders = {environ_of(pid).get("PROMETHEUS_MULTIPROC_DIR") for pid in first}
    assert len(folders) == 1
    folder = folders.pop()
    assert folder is not None
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    assert "PROMETHEUS_MULTIPROC_DIR" not in environ_of(proc.pid)

    await eventually(
        lambda: all_loaded(url, env), within=20, what="both workers to hold the environment"
    )
    for _ in range(REQUESTS):  # fresh connections: the kernel spreads them over both
        await flags(url, key)
    # Each worker's own count (the status page is per process): both served some.
    per_worker = await workers_seen(url)
    served = {pid: sdk_flags_served(body) for pid, body in per_worker.items()}
    assert len(served) == 2
    assert all(count > 0 for count in served.values()), served
    assert sum(served.values()) == REQUESTS
    made = REQUESTS

    def counted(samples: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> bool:
        return (
            total(samples, "crivline_proxy_requests_total", route="sdk_flags")
            == total(samples, "crivline_proxy_request_duration_seconds_count", route="sdk_flags")
            == made
        )

    # Before any scrape: each worker writes its counts to the folder on its own.
    await eventually(
        lambda: counted(_files(folder)), within=20, what="both workers to publish their counts"
    )
    await eventually(
        lambda: every_scrape(url, counted),
        within=20,
        what=f"every scrape to count the {made} requests of both workers",
    )

    # Streams on both workers; the open-streams gauge adds them up.
    sessions, opened = [], []
    try:
        for _ in range(STREAMS):
            session = fresh()
            sessions.append(session)
            response = await session.get(url + "/sdk/v1/stream", headers=key.headers)
            stream = SSEClient(response)
            opened.append(stream)
            assert (await stream.next_event()).event == "put"

        def all_open(samples: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> bool:
            return total(samples, "crivline_proxy_streams_open", kind="sdk") == STREAMS

        await eventually(
            lambda: every_scrape(url, all_open), within=20, what="every scrape to count the streams"
        )
        holding = await eventually(
            lambda: _worker_with_streams(url), within=20, what="a worker holding streams"
        )
        victim, victim_streams = holding
        os.kill(victim, signal.SIGKILL)
        survivors = STREAMS - victim_streams

        def after_the_kill(samples: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> bool:
            return (
                counted(samples)
                and total(samples, "crivline_proxy_streams_open", kind="sdk") == survivors
            )

        await eventually(
            lambda: every_scrape(url, after_the_kill),
            within=30,
            what=f"the dead worker's {victim_streams} streams to leave the gauge, its counts not",
            tolerate=(aiohttp.ClientError,),  # a connection queued at the killed worker
        )
        restarted = await eventually(
            lambda: _restarted(url, victim),
            within=30,
            what="the supervisor to restart it",
            tolerate=(aiohttp.ClientError,),
        )
        assert victim not in restarted
        assert await every_scrape(url, after_the_kill)
    finally:
        for stream in opened:
            stream.close()
        for session in sessions:
            await session.close()

    proc.send_signal(signal.SIGTERM)
    code = await asyncio.wait_for(proc.wait(), 30)
    err = log.read_bytes()
    assert code == 0, err.decode()[-4000:]
    assert b"Traceback" not in err
    assert not os.path.exists(folder)  # noqa: ASYNC240 (a check, nothing waits on it)


def _files(folder: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The workers' shared folder as this process reads it (no worker involved)."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, folder)  # type: ignore[no-untyped-call]
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in registry.collect()
        for sample in family.samples
    }


async def all_loaded(url: str, env: str) -> bool:
    seen = await workers_seen(url)
    return len(seen) == 2 and all(
        any(e["id"] == env for e in body["environments"]) for body in seen.values()
    )


async def _worker_with_streams(url: str) -> tuple[int, int] | None:
    """A worker holding streams, once past the supervisor's start-up window (a worker
    that dies within it fails the whole command instead of being restarted)."""
    seen = await workers_seen(url)
    if len(seen) < 2:
        return None
    pid, body = max(seen.items(), key=lambda item: item[1]["streams"])
    if body["streams"] == 0 or body["uptimeSeconds"] <= STARTUP_SECONDS:
        return None
    return pid, body["streams"]


async def _restarted(url: str, dead: int) -> dict[int, dict[str, Any]] | None:
    seen = await workers_seen(url)
    return seen if len(seen) == 2 and dead not in seen else None
