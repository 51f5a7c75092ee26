"""The work budget of one evaluation, and of one compilation.

Targeting is written by tenants and run by an edge that serves every tenant from one
event loop, so an evaluation must not be able to stall it or allocate without bound.
Work whose size the compiler cannot see is metered while it runs:

- **work units**: one per compiled node evaluated inside ``map``/``filter``/``reduce``/
  ``all``/``some``/``none`` (charged per item, as the item count times the body's
  size), one per array item visited (those operations, ``merge``, ``in`` over an array,
  ``missing``), and one per 64 characters a string operation scans or copies;
- **bytes built**: the length of every string and 8 bytes per item of every array an
  operation builds at run time (``cat``, ``substr``, ``merge``, ``map``, ``filter``, and
  arrays turned into strings by ``==``, ``<``, ``in``, arithmetic or ``cat``). Strings
  ``cat`` and ``substr`` build shorter than 64 characters are not charged: they cost a
  step like any other operation, and this keeps the common short ``cat`` (a bucketing
  key) free of metering.

Everything else an evaluation does is bounded by the compiled size (see
:data:`crivline.flags.model.Limits.max_compiled_bytes`): without loops each compiled
node runs at most once.

The meter is one module-level object, reset by each flag's compiled entry before it
runs (two stores: this is what keeps its cost on the hot path near zero). Evaluation is
synchronous and an edge process evaluates on one thread, its event loop; the meter is
not meant to be shared by threads evaluating at the same time. A bulk evaluation also
draws from a per-request pool; outside one the pool is effectively infinite.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

# How many characters a string operation handles for one work unit.
CHARS_PER_UNIT: Final = 64
# What an array costs in bytes built, per item (a reference).
BYTES_PER_ITEM: Final = 8
_UNLIMITED: Final = 1 << 62


@dataclass(frozen=True, slots=True)
class Budget:
    """Bounds on one evaluation (``work``, ``bytes``) and one bulk request."""

    work: int = 50_000
    bytes: int = 1_048_576
    request_work: int = 200_000
    request_bytes: int = 4_194_304


DEFAULT_BUDGET: Final = Budget()


class BudgetExceeded(Exception):
    """An evaluation (or constant folding at compile time) ran out of its budget.

    ``kind`` is ``"work"``, ``"bytes"`` or ``"request"`` (a bulk request's pool)."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind
        # compiled nodes the failure passed through, innermost first (compile time)
        self.trail: list[object] = []


class Meter:
    """What the running evaluation may still spend."""

    __slots__ = ("bytes", "exceeded", "pool_bytes", "pool_work", "work")

    def __init__(self) -> None:
        self.work = _UNLIMITED
        self.bytes = _UNLIMITED
        self.pool_work = _UNLIMITED
        self.pool_bytes = _UNLIMITED
        self.exceeded = 0  # evaluations ended by the budget, ever (for metrics)

    def grant(self, work: int, bytes_: int) -> None:
        self.work = work
        self.bytes = bytes_

    def open_pool(self, work: int, bytes_: int) -> None:
        self.pool_work = work
        self.pool_bytes = bytes_

    def close_pool(self) -> None:
        self.pool_work = _UNLIMITED
        self.pool_bytes = _UNLIMITED

    def exhausted(self) -> BudgetExceeded:
        if self.pool_work < 0 or self.pool_bytes < 0:
            return BudgetExceeded("request")
        return BudgetExceeded("work" if self.work < 0 else "bytes")


def describe(kind: str, budget: Budget) -> str:
    """The error message of an evaluation that ran out of ``budget``."""
    if kind == "request":
        return (
            f"the bulk evaluation exceeded its budget per request ({budget.request_work} "
            f"work units, {budget.request_bytes} bytes built at run time, across all flags)"
        )
    if kind == "work":
        return (
            f"targeting exceeded the evaluation budget of {budget.work} work units "
            "(operations evaluated inside array operations, array items visited, "
            "characters scanned); simplify the rule or send a smaller context"
        )
    return (
        f"targeting exceeded the evaluation budget of {budget.bytes} bytes of strings and "
        "arrays built at run time; simplify the rule or send a smaller context"
    )


METER: Final = Meter()


def spend(work: int) -> None:
    """Charge ``work`` units; raise :class:`BudgetExceeded` once the budget is gone."""
    m = METER
    m.work -= work
    m.pool_work -= work
    if m.work < 0 or m.pool_work < 0:
        raise m.exhausted()


def build(size: int) -> None:
    """Charge ``size`` bytes built (and the work of copying them)."""
    m = METER
    m.bytes -= size
    m.pool_bytes -= size
    units = size // CHARS_PER_UNIT
    m.work -= units
    m.pool_work -= units
    if m.bytes < 0 or m.pool_bytes < 0 or m.work < 0 or m.pool_work < 0:
        raise m.exhausted()


def scan(chars: int) -> None:
    """Charge scanning ``chars`` characters (searching, matching) as work."""
    if chars >= CHARS_PER_UNIT:
        spend(chars // CHARS_PER_UNIT)


def items(count: int, body: int = 0) -> None:
    """Charge visiting ``count`` items, running a body of ``body`` nodes on each."""
    spend(count * (body + 1))
