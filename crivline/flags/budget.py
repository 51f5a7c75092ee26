"""The work budget of one evaluation, and of one compilation.

Targeting is written by tenants and run by an edge that serves every tenant from one
event loop, so an evaluation must not be able to stall it or allocate without bound.
Work whose size the compiler cannot see is metered while it runs, in **work units**:

- one per compiled node evaluated inside ``map``/``filter``/``reduce``/``all``/
  ``some``/``none`` (charged per item, as the item count times the body's size, before
  the loop runs);
- one per array item visited (those operations, ``merge``, ``in`` over an array,
  ``missing``, an array turned into a string);
- one per :data:`BYTES_PER_UNIT` bytes built at run time: every string and array (8
  bytes an item) that ``cat``, ``substr``, ``merge``, ``map``, ``filter`` build, and
  arrays turned into strings by ``==``, ``<``, ``in``, arithmetic or ``cat`` — so a
  budget of ``work`` units also bounds the memory an evaluation builds to
  ``work × BYTES_PER_UNIT`` bytes;
- one per :data:`CHARS_PER_UNIT` characters a string operation scans (``in`` over a
  long string, ``regex_match`` on a long input).

Strings ``cat`` and ``substr`` build shorter than 64 characters are not charged: they
cost a step like any other operation, which keeps the common short ``cat`` (a bucketing
key) free of metering. Everything else an evaluation does is bounded by the compiled
size (see :data:`crivline.flags.model.Limits.max_compiled_bytes`): without loops each
compiled node runs at most once.

The meter is one module-level object whose counter each flag's compiled entry resets
before it runs — one store, which is what keeps its cost on the hot path small.
Evaluation is synchronous and an edge process evaluates on one thread, its event loop;
the meter is not meant to be shared by threads evaluating at the same time. A bulk
evaluation also draws from a per-request pool; outside one the pool is effectively
infinite.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

# How many characters a string operation scans for one work unit.
CHARS_PER_UNIT: Final = 64
# How many bytes built at run time cost one work unit.
BYTES_PER_UNIT: Final = 16
# What an array costs in bytes built, per item (a reference).
BYTES_PER_ITEM: Final = 8
_UNLIMITED: Final = 1 << 62


@dataclass(frozen=True, slots=True)
class Budget:
    """Work units one evaluation (``work``) and one bulk request (``request_work``) may
    spend; ``work × BYTES_PER_UNIT`` bounds the bytes an evaluation builds."""

    work: int = 50_000
    request_work: int = 200_000

    @property
    def bytes(self) -> int:
        return self.work * BYTES_PER_UNIT

    @property
    def request_bytes(self) -> int:
        return self.request_work * BYTES_PER_UNIT


DEFAULT_BUDGET: Final = Budget()


class BudgetExceeded(Exception):
    """An evaluation (or constant folding at compile time) ran out of its budget.

    ``kind`` is ``"work"`` (the evaluation's) or ``"request"`` (a bulk request's pool)."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind
        # compiled nodes the failure passed through, innermost first (compile time)
        self.trail: list[object] = []


class Meter:
    """What the running evaluation may still spend."""

    __slots__ = ("exceeded", "pool", "work")

    def __init__(self) -> None:
        self.work = _UNLIMITED
        self.pool = _UNLIMITED
        self.exceeded = 0  # evaluations ended by the budget, ever (for metrics)

    def open_pool(self, work: int) -> None:
        self.pool = work

    def close_pool(self) -> None:
        self.pool = _UNLIMITED

    def left(self) -> int:
        return self.work


def describe(kind: str, budget: Budget) -> str:
    """The error message of an evaluation that ran out of ``budget``."""
    if kind == "request":
        return (
            f"the bulk evaluation exceeded its budget per request of {budget.request_work} "
            "work units across all flags"
        )
    return (
        f"targeting exceeded the evaluation budget of {budget.work} work units "
        "(operations run inside array operations, array items visited, "
        f"{BYTES_PER_UNIT} bytes of strings and arrays built at run time, "
        f"{CHARS_PER_UNIT} characters scanned); simplify the rule or send a smaller context"
    )


METER: Final = Meter()


def spend(work: int) -> None:
    """Charge ``work`` units; raise :class:`BudgetExceeded` once the budget is gone."""
    m = METER
    m.work -= work
    m.pool -= work
    if m.work < 0:
        raise BudgetExceeded("work")
    if m.pool < 0:
        raise BudgetExceeded("request")


def build(size: int) -> None:
    """Charge building ``size`` bytes."""
    spend(size // BYTES_PER_UNIT)


def scan(chars: int) -> None:
    """Charge scanning ``chars`` characters (searching, matching)."""
    if chars >= CHARS_PER_UNIT:
        spend(chars // CHARS_PER_UNIT)


def items(count: int, body: int = 0) -> None:
    """Charge visiting ``count`` items, running a body of ``body`` nodes on each."""
    spend(count * (body + 1))
