"""How often ``crivline up`` restarts what died before it gives up.

A server or part that exits is started again on the same port and data; one that keeps
exiting — :attr:`RestartBudget.limit` restarts within :attr:`RestartBudget.window`
seconds — is a fault a restart does not cure, and the stack stops with a clear message.
Pure bookkeeping (no processes here): :class:`crivline.up.Stack` does the restarting.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

RESTARTS = 5
WINDOW_SECONDS = 60.0


@dataclass
class RestartBudget:
    """At most ``limit`` restarts of one thing within any ``window`` seconds."""

    limit: int = RESTARTS
    window: float = WINDOW_SECONDS
    _at: deque[float] = field(default_factory=deque)

    def spend(self, now: float) -> bool:
        """Record a restart at ``now`` (monotonic seconds); False when none is left."""
        while self._at and now - self._at[0] >= self.window:
            self._at.popleft()
        if len(self._at) >= self.limit:
            return False
        self._at.append(now)
        return True

    def __len__(self) -> int:
        return len(self._at)
