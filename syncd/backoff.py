"""Jittered exponential backoff, and bounded retries for connecting at start-up."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from crivline.logs import describe, fields

T = TypeVar("T")
log = logging.getLogger(__name__)


def reraise_if_cancelled() -> None:
    """Re-raise a cancellation that a library turned into an error.

    Before Python 3.12, ``asyncio.wait_for`` (used inside redis-py) can turn a
    cancellation that races a timeout into ``TimeoutError``. Loops that catch I/O errors
    call this first, so a stop request is never mistaken for a failure to retry.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class Backoff:
    """Delays that double up to ``cap``, each one drawn from its upper half.

    Half-jitter keeps a floor (a flapping server is not hammered) while spreading many
    edges that lost the same Postgres over time (they do not reconnect in lockstep).
    """

    def __init__(
        self,
        base: float = 0.05,
        cap: float = 5.0,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.base = base
        self.cap = cap
        self.attempt = 0
        self._rng = rng

    def next(self) -> float:
        ceiling = min(self.cap, self.base * (2**self.attempt))
        self.attempt = min(self.attempt + 1, 32)
        return float(ceiling / 2 + self._rng() * ceiling / 2)

    def reset(self) -> None:
        self.attempt = 0

    async def sleep(self) -> None:
        await asyncio.sleep(self.next())


async def retry(
    what: str,
    attempt: Callable[[], Awaitable[T]],
    *,
    retry_on: tuple[type[BaseException], ...],
    deadline: float,
    backoff: Backoff | None = None,
) -> T:
    """``attempt()`` until it succeeds or ``deadline`` seconds have passed (then re-raise)."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + deadline
    delays = backoff or Backoff(base=0.1, cap=3.0)
    while True:
        try:
            return await attempt()
        except retry_on as exc:
            delay = delays.next()
            if loop.time() + delay > give_up:
                raise
            log.warning(
                "connect failed, retrying",
                extra=fields(target=what, error=describe(exc), retry_in=delay),
            )
            await asyncio.sleep(delay)
