"""Waiting for a condition instead of sleeping: the suite's one :func:`eventually`."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any


async def eventually(
    condition: Callable[[], Any],
    within: float = 5.0,
    what: str = "condition",
    *,
    every: float = 0.02,
    tolerate: tuple[type[BaseException], ...] = (),
) -> Any:
    """Poll ``condition`` (sync or async) until it returns something truthy, and return
    that; fail after ``within`` seconds naming ``what`` and the last answer. Exceptions
    of the ``tolerate`` types count as a falsy answer (a server still starting)."""
    deadline = time.monotonic() + within
    last: Any = None
    while True:
        try:
            value = condition()
            if inspect.isawaitable(value):
                value = await value
        except tolerate as exc:
            value, last = None, exc
        if value:
            return value
        if value is not None:
            last = value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:g}s waiting for {what} ({last!r})")
        await asyncio.sleep(every)
