"""The proxy's garbage-collector policy (proxy.heap): frozen objects are out of a full
collection's sight until the periodic thaw, which does collect their cycles."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator

import pytest
from support.waiting import eventually

from crivline.tasks import cancel_and_wait
from proxy import heap


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the collector frees it


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()  # the test process's heap is not the proxy's to keep frozen


def test_a_frozen_cycle_waits_for_the_thaw() -> None:
    node = Node()
    alive = weakref.ref(node)
    heap.freeze()
    del node
    gc.collect()
    assert alive() is not None
    assert gc.get_freeze_count() > 0
    took = heap.thaw_and_collect()
    assert alive() is None
    assert took >= 0
    assert gc.get_freeze_count() > 0  # what survived is frozen again


async def test_the_policy_freezes_what_is_alive_until_cancelled() -> None:
    before = gc.get_freeze_count()
    node = Node()
    alive = weakref.ref(node)
    task = asyncio.create_task(heap.run(freeze_seconds=0.01, thaw_seconds=3600))
    await eventually(lambda: gc.get_freeze_count() > before, what="the heap frozen")
    del node
    gc.collect()
    assert alive() is not None  # frozen with everything else alive at the tick
    await cancel_and_wait(task)
    assert task.cancelled()


async def test_the_policy_thaws_and_collects_cycles() -> None:
    node = Node()
    alive = weakref.ref(node)
    heap.freeze()
    del node
    task = asyncio.create_task(heap.run(freeze_seconds=0.01, thaw_seconds=0))
    await eventually(lambda: alive() is None, what="the frozen cycle collected at a thaw")
    await cancel_and_wait(task)
