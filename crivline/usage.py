"""A usage batch: what an edge's syncd sends control's ingestion route (pure, no I/O).

::

    {"sequence": 1732928400123,
     "counts": [{"environment": "<uuid>", "day": "2026-11-30", "kind": "poll", "count": 42}],
     "tenants": ["<uuid>", ...]}

``sequence`` numbers the edge's batches (a positive 63-bit integer, larger for later
batches): control adds a batch once per (edge, sequence), so a batch resent after a
lost answer is recognised. ``tenants`` asks for those tenants' totals of today in the
answer, whether or not the batch counts anything for them (other edges do).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date
from typing import Any

from crivline.errors import FieldProblem
from crivline.plans import USAGE_KINDS

MAX_COUNTS = 10_000
MAX_TENANTS = 10_000
_MAX_INT = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Count:
    environment_id: str
    day: date
    kind: str
    count: int

    def to_json(self) -> dict[str, Any]:
        return {
            "environment": self.environment_id,
            "day": self.day.isoformat(),
            "kind": self.kind,
            "count": self.count,
        }


@dataclass(frozen=True, slots=True)
class Batch:
    sequence: int
    counts: tuple[Count, ...]
    tenants: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "sequence": self.sequence,
            "counts": [c.to_json() for c in self.counts],
            "tenants": list(self.tenants),
        }


def count_field(environment_id: str, day: date, kind: str) -> str:
    """The edge Redis hash field of one count (see :mod:`crivline.keyspace`)."""
    return f"{environment_id}|{day.isoformat()}|{kind}"


def pending_field(tenant_id: str, day: date) -> str:
    """The field of a tenant's pending evaluations of ``day`` (see crivline.keyspace)."""
    return f"{tenant_id}|{day.isoformat()}"


def counts_from_fields(fields: dict[str, int]) -> tuple[Count, ...]:
    """Counts from the edge Redis hash; fields that are not counts (``_seq``) or are
    malformed are skipped, non-positive values too."""
    out = []
    for name, value in sorted(fields.items()):
        env, _, rest = name.partition("|")
        day_text, _, kind = rest.partition("|")
        if kind not in USAGE_KINDS or _uuid(env) is None or value < 1:
            continue
        try:
            day = date.fromisoformat(day_text)
        except ValueError:
            continue
        out.append(Count(env, day, kind, value))
    return tuple(out)


class BatchProblems(Exception):
    def __init__(self, problems: list[FieldProblem]) -> None:
        super().__init__("; ".join(f"{p.path}: {p.message}" for p in problems))
        self.problems = problems


def _is_int(value: Any, lo: int) -> bool:
    return type(value) is int and lo <= value <= _MAX_INT


def _uuid(value: Any) -> str | None:
    if not isinstance(value, str) or len(value) != 36:
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


def _count(item: Any, path: str, problems: list[FieldProblem]) -> Count | None:
    if not isinstance(item, dict) or set(item) != {"environment", "day", "kind", "count"}:
        problems.append(FieldProblem(path, "must be {environment, day, kind, count}"))
        return None
    env = _uuid(item["environment"])
    day: date | None = None
    if isinstance(item["day"], str) and len(item["day"]) == 10:
        try:
            day = date.fromisoformat(item["day"])
        except ValueError:
            day = None
    before = len(problems)
    if env is None:
        problems.append(FieldProblem(f"{path}.environment", "must be an environment id"))
    if day is None:
        problems.append(FieldProblem(f"{path}.day", "must be a date, YYYY-MM-DD"))
    if item["kind"] not in USAGE_KINDS:
        problems.append(FieldProblem(f"{path}.kind", f"must be one of {', '.join(USAGE_KINDS)}"))
    if not _is_int(item["count"], 1):
        problems.append(FieldProblem(f"{path}.count", "must be a whole number of at least 1"))
    if len(problems) > before or env is None or day is None:
        return None
    return Count(env, day, item["kind"], item["count"])


def parse_batch(document: Any) -> Batch:
    """The batch ``document`` holds; :class:`BatchProblems` listing what is wrong."""
    if not isinstance(document, dict):
        raise BatchProblems([FieldProblem("", "must be a JSON object")])
    problems = [
        FieldProblem(name, "is not a field of a usage batch")
        for name in document
        if name not in ("sequence", "counts", "tenants")
    ]
    sequence = document.get("sequence")
    if not _is_int(sequence, 1):
        problems.append(FieldProblem("sequence", "must be a whole number from 1 to 2^63-1"))
    raw_counts = document.get("counts", [])
    raw_tenants = document.get("tenants", [])
    counts: list[Count] = []
    tenants: list[str] = []
    if not isinstance(raw_counts, list) or len(raw_counts) > MAX_COUNTS:
        problems.append(FieldProblem("counts", f"must be a list of at most {MAX_COUNTS}"))
    else:
        for i, item in enumerate(raw_counts):
            if (count := _count(item, f"counts[{i}]", problems)) is not None:
                counts.append(count)
    if not isinstance(raw_tenants, list) or len(raw_tenants) > MAX_TENANTS:
        problems.append(FieldProblem("tenants", f"must be a list of at most {MAX_TENANTS}"))
    else:
        for i, item in enumerate(raw_tenants):
            if (tenant := _uuid(item)) is None:
                problems.append(FieldProblem(f"tenants[{i}]", "must be a tenant id"))
            else:
                tenants.append(tenant)
    if problems:
        raise BatchProblems(problems)
    assert isinstance(sequence, int)
    return Batch(sequence, tuple(counts), tuple(dict.fromkeys(tenants)))
