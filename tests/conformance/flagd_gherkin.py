"""A small reader for the Gherkin the flagd testbed uses.

Supports Feature/Background/Scenario/Scenario Outline, tags on features, scenarios and
Examples blocks, Examples tables (expanded into one scenario per row, ``<name>``
placeholders filled in) and data tables attached to steps. Nothing else is needed by
the testbed's evaluator and provider suites.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

_STEP = re.compile(r"^(Given|When|Then|And|But|\*)\s+(.*)$")
_PLACEHOLDER = re.compile(r"<([^<>]+)>")


@dataclass
class Step:
    keyword: str
    text: str
    table: list[list[str]] = field(default_factory=list)


@dataclass
class Scenario:
    feature: str  # file name
    name: str
    line: int
    tags: frozenset[str]
    steps: list[Step]
    row: dict[str, str] | None = None  # the Examples row of an outline

    @property
    def id(self) -> str:
        where = f"{self.feature}:{self.line}"
        if self.row is None:
            return f"{where} {self.name}"
        values = ",".join(self.row.values())
        return f"{where} {self.name} [{values}]"


def split_row(line: str) -> list[str]:
    """Cells of a ``| a | b |`` row; ``\\|``, ``\\\\`` and ``\\n`` are Gherkin escapes."""
    body = line.strip()
    if body.startswith("|"):
        body = body[1:]
    cells: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch == "\\" and i + 1 < len(body) and body[i + 1] in "|\\n":
            nxt = body[i + 1]
            current.append("\n" if nxt == "n" else nxt)
            i += 2
            continue
        if ch == "|":
            cells.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
        i += 1
    return cells


@dataclass
class _Outline:
    name: str
    line: int
    tags: frozenset[str]
    steps: list[Step]
    is_outline: bool
    examples: list[tuple[frozenset[str], list[list[str]]]] = field(default_factory=list)


def parse_feature(path: Path) -> list[Scenario]:
    feature_tags: frozenset[str] = frozenset()
    pending: set[str] = set()
    background: list[Step] = []
    outlines: list[_Outline] = []
    target: list[Step] | None = None
    table_owner: list[list[str]] | None = None
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("@"):
            pending.update(t[1:] for t in line.split() if t.startswith("@"))
            continue
        if line.startswith("Feature:"):
            feature_tags, pending = frozenset(pending), set()
            continue
        if line.startswith("Background:"):
            target, table_owner = background, None
            continue
        if line.startswith(("Scenario:", "Scenario Outline:", "Scenario Template:", "Example:")):
            keyword, _, name = line.partition(":")
            outline = _Outline(
                name=name.strip(),
                line=number,
                tags=feature_tags | pending,
                steps=[],
                is_outline=keyword in ("Scenario Outline", "Scenario Template"),
            )
            outlines.append(outline)
            pending, target, table_owner = set(), outline.steps, None
            continue
        if line.startswith(("Examples:", "Scenarios:")):
            table: list[list[str]] = []
            outlines[-1].examples.append((frozenset(pending), table))
            pending, target, table_owner = set(), None, table
            continue
        if line.startswith("|"):
            if table_owner is not None:
                table_owner.append(split_row(line))
            elif target:
                target[-1].table.append(split_row(line))
            continue
        step = _STEP.match(line)
        if step and target is not None:
            target.append(Step(step.group(1), step.group(2)))
            continue
        raise ValueError(f"{path.name}:{number}: cannot read {line!r}")
    return [s for o in outlines for s in _expand(path.name, o, background)]


def _fill(text: str, row: dict[str, str]) -> str:
    return _PLACEHOLDER.sub(lambda m: row.get(m.group(1), m.group(0)), text)


def _expand(feature: str, outline: _Outline, background: list[Step]) -> list[Scenario]:
    steps = [*background, *outline.steps]
    if not outline.is_outline:
        return [Scenario(feature, outline.name, outline.line, outline.tags, steps)]
    out: list[Scenario] = []
    for tags, table in outline.examples:
        if not table:
            continue
        header, rows = table[0], table[1:]
        for cells in rows:
            row = dict(zip(header, cells, strict=True))
            filled = [
                Step(s.keyword, _fill(s.text, row), [[_fill(c, row) for c in r] for r in s.table])
                for s in steps
            ]
            out.append(
                Scenario(feature, outline.name, outline.line, outline.tags | tags, filled, row)
            )
    return out
