"""Background tasks that are always awaited: spawned through :class:`Tasks`, stopped by it.

The one way to stop a task in control, syncd and the proxy is :func:`cancel_and_wait`.

Cancelling a task and then waiting for it is the only clean way to stop it. Waiting uses
``asyncio.wait``, so a cancellation of the *waiter* propagates instead of being
mistaken for the task's own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from crivline.ioerrors import REDIS_ERRORS
from crivline.logs import fields

T = TypeVar("T")

log = logging.getLogger(__name__)


async def cancel_and_wait(
    *tasks: asyncio.Task[Any] | asyncio.Future[Any], patience: float = 0.5, every: float = 0.5
) -> None:
    """Cancel ``tasks`` and wait until every one has finished. Their own failures are not
    raised here (a :class:`Tasks` member's is logged when it happens).

    The cancellation is repeated until a task ends — after ``patience`` seconds, then
    every ``every`` seconds: a library can swallow a ``CancelledError`` (redis-py 8.1
    while it connects; ``asyncio.wait_for`` before Python 3.12 when one races a
    completion), and a single ``cancel()`` would then wait forever. If *we* are
    cancelled meanwhile, that propagates.
    """
    pending = [task for task in tasks if not task.done()]
    wait = patience
    while pending:
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=wait)
        pending = [task for task in pending if not task.done()]
        wait = every
    for task in tasks:
        if not task.cancelled():
            task.exception()  # retrieved, so asyncio does not complain about it


class Tasks:
    """The background tasks of one component; :meth:`close` cancels and awaits them all."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    def spawn(
        self, coro: Coroutine[Any, Any, T], name: str, *, quiet: bool = False
    ) -> asyncio.Task[T]:
        """Run ``coro`` in the background. ``quiet``: its failure is for whoever awaits it
        (a single-flight load), not for the log."""
        if self._closed:
            coro.close()
            raise RuntimeError(f"{self._name} is closed")
        task = asyncio.get_running_loop().create_task(coro, name=f"{self._name}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._quiet_done if quiet else self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error(
                "background task failed",
                exc_info=exc,
                extra=fields(task=task.get_name()),
            )

    def _quiet_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: the awaiting callers have it

    async def close(self) -> None:
        self._closed = True
        while self._tasks:
            await cancel_and_wait(*self._tasks)


async def every(
    interval: float,
    step: Callable[[], Awaitable[object]],
    *,
    logger: logging.Logger,
    unavailable: str,
) -> None:
    """Run ``step`` every ``interval`` seconds until cancelled. A Redis or socket error is
    logged once per outage (``unavailable`` says what the caller does meanwhile) and the
    loop goes on; anything else ends it (a bug, logged by :class:`Tasks`)."""
    failing = False
    while True:
        try:
            await step()
            failing = False
        except REDIS_ERRORS as exc:
            if not failing:
                logger.info(unavailable, extra=fields(error=str(exc)))
            failing = True
        await asyncio.sleep(interval)
