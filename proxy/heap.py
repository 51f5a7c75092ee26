"""Keeping Python's full garbage collections short with thousands of streams open.

A full (generation 2) collection walks every tracked object: with 10,000 open streams'
aiohttp objects and the flag states alive it took 260–320 ms, during which no event
reached any client. Nearly all of those objects live as long as their stream or their
version, so :func:`gc.freeze` moves them out of the collector's sight: the proxy freezes
once started and then every ``gc_freeze_seconds`` (freezing is constant-time, and within
that delay it covers each new state swapped in and each stream opened), so a
collection only walks what appeared since.

Frozen objects are still freed by reference counting when they die; only garbage in
reference *cycles* waits: every ``gc_thaw_seconds`` the heap is unfrozen, collected once
in full and frozen again, which bounds what such garbage can hold to what that interval
produces. ``gc_freeze_seconds`` of 0 leaves the collector as Python configures it.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time

from crivline.logs import fields

log = logging.getLogger(__name__)


def freeze() -> None:
    gc.freeze()


def thaw_and_collect() -> float:
    """One full collection over everything, then freeze what survived; its seconds."""
    started = time.perf_counter()
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    return time.perf_counter() - started


async def run(freeze_seconds: float, thaw_seconds: float) -> None:
    """The policy above, until cancelled (it is one of the app's awaited tasks)."""
    freeze()
    thawed_at = time.monotonic()
    while True:
        await asyncio.sleep(freeze_seconds)
        if time.monotonic() - thawed_at >= thaw_seconds:
            took = thaw_and_collect()
            thawed_at = time.monotonic()
            log.info("heap collected in full", extra=fields(seconds=round(took, 3)))
        else:
            freeze()
