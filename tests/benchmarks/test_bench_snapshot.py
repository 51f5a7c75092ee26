"""What building a snapshot from its one statement's row costs syncd, for the bench's
100-flag set (:mod:`ltflags`) and 32 keys: the flags, segments and keys come as three
JSON texts, one parse each (:func:`crivline.snapshot.snapshot_from_row`), against the
rows the four statements gave before, each jsonb column decoded on its own (what the
connection's JSON codec did per row) and then built, in the same run.

``make bench-micro`` (or ``pytest -s`` on this file) prints both and their ratio; as a
test it checks that both give the same flag set, byte for byte, and the same keys.

The pure part is a small share of what the one statement saves: against the real
servers (``loadtests/syncd_path.py``) most of the saving is the round trips and asyncpg's
per-row work.
"""

from __future__ import annotations

import timeit
from typing import Any

import orjson
import pytest
from support.benchset import ltflags

from crivline.snapshot import EdgeKey, build_flag_set, serialize_flag_set, snapshot_from_row

pytestmark = pytest.mark.benchmark

ROUNDS, NUMBER = 5, 300


def _lists() -> tuple[list[list[Any]], list[list[Any]], list[list[Any]]]:
    doc = ltflags.flag_set()
    flags = [
        [key, f["variants"], f.get("metadata") or {}, f["state"], f["defaultVariant"],
         f.get("targeting")]
        for key, f in sorted(doc["flags"].items())
    ]  # fmt: skip
    segments = [[key, d] for key, d in sorted((doc.get("$evaluators") or {}).items())]
    keys = [[f"{n:064x}", f"key-{n:03d}", "server", None] for n in range(32)]
    return flags, segments, keys


def _row() -> dict[str, Any]:
    flags, segments, keys = _lists()
    return {
        "id": "env", "key": "production", "version": 7, "flags_version": 7,
        "fractional_bucketing": "flagd", "updated_at": 1.5, "project_id": "p",
        "project_key": "bench", "tenant_id": "t", "tenant_key": "demo",
        "flags": orjson.dumps(flags).decode(), "segments": orjson.dumps(segments).decode(),
        "keys": orjson.dumps(keys).decode(),
    }  # fmt: skip


def _column_texts() -> tuple[list[list[Any]], list[list[Any]], list[list[Any]]]:
    """The former rows: each jsonb column as the text the codec decoded one by one."""
    flags, segments, keys = _lists()
    as_text = [
        [k, orjson.dumps(v), orjson.dumps(m), s, d, None if t is None else orjson.dumps(t)]
        for k, v, m, s, d, t in flags
    ]
    return as_text, [[k, orjson.dumps(d)] for k, d in segments], keys


def test_one_parse_per_list_against_one_per_column() -> None:
    row = _row()
    flag_rows, segment_rows, key_rows = _column_texts()

    def before() -> tuple[dict[str, Any], tuple[EdgeKey, ...]]:
        flags = [
            (k, orjson.loads(v), orjson.loads(m), s, d, None if t is None else orjson.loads(t))
            for k, v, m, s, d, t in flag_rows
        ]
        segments = [(k, orjson.loads(d)) for k, d in segment_rows]
        doc = build_flag_set(
            flag_set_id="bench/production", flags=flags, segments=segments, bucketing="flagd"
        )
        return doc, tuple(EdgeKey(h, i, kind, e) for h, i, kind, e in key_rows)

    def after() -> tuple[dict[str, Any], tuple[EdgeKey, ...]]:
        snapshot = snapshot_from_row(row)
        return snapshot.flag_set, snapshot.keys

    old_doc, old_keys = before()
    new_doc, new_keys = after()
    assert serialize_flag_set(new_doc) == serialize_flag_set(old_doc)
    assert new_keys == old_keys
    assert len(new_keys) == 32
    # Interleaved rounds, best of each: the machine's load falls on both alike.
    rounds = [(timeit.timeit(before, number=NUMBER), timeit.timeit(after, number=NUMBER))
              for _ in range(ROUNDS)]  # fmt: skip
    best_before = min(b for b, _ in rounds) / NUMBER
    best_after = min(a for _, a in rounds) / NUMBER
    print(
        f"\nsnapshot from its row, 100 flags: per column {best_before * 1e6:.0f} µs,"
        f" one statement {best_after * 1e6:.0f} µs, after/before {best_after / best_before:.2f}"
    )
