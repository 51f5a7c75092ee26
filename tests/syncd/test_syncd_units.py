"""The pure parts of syncd: wake-up parsing, backoff, the coalescing queue, and letting
a write in flight finish when cancelled."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from syncd.backoff import Backoff, retry
from syncd.follow import parse_wakeup
from syncd.metrics import SyncdMetrics
from syncd.replicate import Want
from syncd.work import WorkQueue, finish_in_flight


def test_wakeups_are_parsed_strictly() -> None:
    good = parse_wakeup(b'{"e": "env-1", "v": 7, "t": "t1", "p": "p1", "at": 12.5}', 3.0)
    assert good is not None
    assert (good.environment, good.version, good.tenant, good.project, good.at) == (
        "env-1", 7, "t1", "p1", 12.5,
    )  # fmt: skip
    assert good.received == 3.0
    minimal = parse_wakeup('{"e": "env-1", "v": 1}')
    assert minimal is not None
    assert minimal.at is None
    for bad in (
        b"not json",
        b"[]",
        b'{"e": "env-1"}',
        b'{"e": "env-1", "v": 0}',
        b'{"e": "env-1", "v": "7"}',
        b'{"e": "env-1", "v": true}',
        b'{"e": 5, "v": 7}',
        b'{"e": "", "v": 7}',
        orjson.dumps({"e": "x" * 100, "v": 7}),
        b'{"e": "env-1", "v": 7, "pad": "' + b"x" * 9000 + b'"}',
    ):
        assert parse_wakeup(bad) is None, bad


def test_backoff_doubles_within_its_cap_and_keeps_a_floor() -> None:
    low = Backoff(base=0.1, cap=1.0, rng=lambda: 0.0)
    assert [low.next() for _ in range(6)] == [0.05, 0.1, 0.2, 0.4, 0.5, 0.5]
    high = Backoff(base=0.1, cap=1.0, rng=lambda: 1.0)
    assert [high.next() for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    high.reset()
    assert high.next() == 0.1


async def test_retry_gives_up_at_its_deadline() -> None:
    calls = 0

    async def failing() -> None:
        nonlocal calls
        calls += 1
        raise ConnectionRefusedError("no")

    with pytest.raises(ConnectionRefusedError):
        await retry("test", failing, retry_on=(OSError,), deadline=0.3, backoff=Backoff(0.05, 0.1))
    assert calls >= 2


def test_the_queue_merges_per_environment_and_drops_what_is_applied() -> None:
    known: dict[str, int] = {"a": 5}
    queue = WorkQueue(known, SyncdMetrics())
    assert queue.offer("a", Want(5)) == "duplicate"  # Redis already has it
    assert queue.offer("a", Want(6, received=2.0)) == "queued"
    assert queue.offer("a", Want(9, at=99.0, received=3.0)) == "merged"
    assert queue.offer("a", Want(8)) == "duplicate"
    assert queue.offer("b", Want(1)) == "queued"
    assert len(queue) == 2
    merged = queue._pending["a"]
    assert (merged.version, merged.at, merged.received) == (9, 99.0, 2.0)


async def test_the_queue_runs_an_environment_once_at_a_time() -> None:
    known: dict[str, int] = {}
    queue = WorkQueue(known, SyncdMetrics())
    queue.offer("a", Want(1))
    env, want = await queue.take()
    assert (env, want.version) == ("a", 1)
    assert queue.offer("a", Want(1)) == "duplicate"  # the rebuild in flight covers it
    assert queue.offer("a", Want(2)) == "queued"  # waits for the one in flight
    assert queue._ready.empty()
    known["a"] = 1
    queue.done("a")
    env, want = await queue.take()
    assert (env, want.version) == ("a", 2)
    # A wake-up whose version got applied meanwhile is dropped when its turn comes.
    known["a"] = 3
    queue.done("a")
    queue.offer("a", Want(4))
    known["a"] = 4
    queue.offer("b", Want(1))
    env, _ = await queue.take()
    assert env == "b"


async def test_a_cancelled_caller_lets_the_write_in_flight_finish() -> None:
    started, finished = asyncio.Event(), asyncio.Event()

    async def write() -> str:
        started.set()
        await asyncio.sleep(0.2)
        finished.set()
        return "written"

    task = asyncio.create_task(finish_in_flight(write(), grace=5))
    await started.wait()
    task.cancel()
    await asyncio.wait({task})
    assert task.cancelled()  # the cancellation goes on…
    assert finished.is_set()  # …after the write completed


async def test_a_write_that_overruns_the_grace_is_cancelled() -> None:
    started, interrupted = asyncio.Event(), asyncio.Event()

    async def write() -> None:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            interrupted.set()
            raise

    task = asyncio.create_task(finish_in_flight(write(), grace=0.1))
    await started.wait()
    task.cancel()
    await asyncio.wait({task})
    assert task.cancelled()
    assert interrupted.is_set()


def test_bus_only_and_concurrency_settings_reach_syncd_config() -> None:
    from crivline.settings import Settings
    from syncd.config import SyncdConfig

    default = SyncdConfig.from_settings(Settings.from_env({}))
    assert (default.bus_only, default.listen, default.concurrency) == (False, True, 4)
    config = SyncdConfig.from_settings(
        Settings.from_env({"CRIVLINE_SYNCD_BUS_ONLY": "on", "CRIVLINE_SYNCD_CONCURRENCY": "1"})
    )
    assert (config.bus_only, config.listen, config.concurrency) == (True, False, 1)
