"""What this process knows about its edge: is Redis there, is syncd keeping it fresh.

Pure state, no I/O. The subscriber flips :attr:`EdgeStatus.redis_up` the moment the
pub/sub connection drops or returns; the health monitor fills in syncd's heartbeat and
sync state once a second. Request handlers only read it: :meth:`stale_seconds` feeds
the ``Crivline-Stale`` header, and ``/readyz`` and the status page answer
:meth:`verdict`, :meth:`problems` and :meth:`syncd_view`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

READY, DEGRADED, NOT_READY = "ready", "degraded", "not ready"


@dataclass(slots=True)
class EdgeStatus:
    redis_up: bool = False
    redis_error: str | None = None
    syncd_alive: bool = False  # syncd's heartbeat key exists
    epoch: str | None = None  # the sync state's epoch: a complete sync is in Redis
    reconciled_at: float | None = None  # when syncd last confirmed Redis == Postgres
    warm: bool = False  # every served environment is loaded in this process
    behind: int = 0  # environments announced at a version this process has not loaded
    checked_at: float | None = None  # last successful health poll
    fresh_seconds: float = 15.0  # reconciled_at older than this is not fresh
    ever_ready: bool = False  # it was ready once (then trouble is "degraded", not "not ready")
    # Since when this process has not known that it serves current data (None: it does).
    degraded_since: float | None = field(default_factory=time.time)

    # -- transitions ----------------------------------------------------------------------

    def redis_lost(self, error: str, now: float | None = None) -> None:
        self.redis_up = False
        self.redis_error = error
        self._update(now)

    def redis_back(self, now: float | None = None) -> None:
        self.redis_up = True
        self.redis_error = None
        self._update(now)

    def loaded(self, warm: bool, now: float | None = None) -> None:
        self.warm = warm
        self._update(now)

    def set_behind(self, count: int, now: float | None = None) -> None:
        if count != self.behind:
            self.behind = count
            self._update(now)

    def observed(
        self,
        *,
        syncd_alive: bool,
        epoch: str | None,
        reconciled_at: float | None,
        now: float | None = None,
    ) -> None:
        self.syncd_alive = syncd_alive
        self.epoch = epoch
        self.reconciled_at = reconciled_at
        self.checked_at = time.time() if now is None else now
        self._update(now)

    def _update(self, now: float | None) -> None:
        now = time.time() if now is None else now
        if self.problems(now):
            if self.degraded_since is None:
                self.degraded_since = now
        else:
            self.degraded_since = None
            self.ever_ready = True

    # -- questions --------------------------------------------------------------------------

    def problems(self, now: float | None = None) -> list[str]:
        """Why this process may be serving stale data; empty when it is not."""
        now = time.time() if now is None else now
        out: list[str] = []
        if not self.redis_up:
            out.append(f"redis unavailable ({self.redis_error or 'not connected yet'})")
            return out
        if not self.warm:
            out.append("environments not loaded yet")
        if self.behind:
            out.append(
                f"{self.behind} environment(s) behind a version announced on the changes "
                "channel (loading it)"
            )
        if not self.syncd_alive:
            out.append("syncd heartbeat missing: syncd is not running for this edge")
        if self.epoch is None:
            out.append("no complete sync in redis (sync state has no epoch)")
        elif self.reconciled_at is None:
            out.append("syncd has not reconciled yet")
        elif now - self.reconciled_at > self.fresh_seconds:
            age = now - self.reconciled_at
            out.append(
                f"last reconciliation {age:.0f}s ago (fresh means within {self.fresh_seconds:g}s)"
            )
        return out

    def syncd_fresh(self, now: float | None = None) -> bool:
        """syncd runs for this edge and has recently confirmed Redis equals Postgres."""
        now = time.time() if now is None else now
        return (
            self.syncd_alive
            and self.reconciled_at is not None
            and now - self.reconciled_at <= self.fresh_seconds
        )

    def verdict(self, now: float, strict: bool = False) -> str:
        """``ready``, ``degraded`` (it was ready and still serves what it holds; never in
        strict mode) or ``not ready`` — what ``/readyz`` and the status page say."""
        if not self.problems(now):
            return READY
        if self.ever_ready and self.warm and not strict:
            return DEGRADED
        return NOT_READY

    def syncd_view(self, now: float) -> dict[str, Any]:
        """syncd's state as ``/readyz`` and the status page show it (JSON-ready)."""
        reconciled = self.reconciled_at
        return {
            "heartbeat": self.syncd_alive,
            "completeSync": self.epoch is not None,
            "reconciledAt": reconciled,
            "snapshotAgeSeconds": round(now - reconciled, 1) if reconciled else None,
            "freshWithinSeconds": self.fresh_seconds,
        }

    def stale_seconds(self, now: float | None = None) -> int | None:
        """Whole seconds since this process last knew it served current data, or None."""
        since = self.degraded_since
        if since is None:
            return None
        now = time.time() if now is None else now
        return max(0, math.floor(now - since))
