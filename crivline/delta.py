"""Flag-set deltas: what turns one version of a flag set into the next. Pure code.

syncd computes a delta per version (:func:`compute_delta`) and stores it in the edge's
delta log; the proxy sends it to stream clients as a ``patch``; a client — a test, the
in-process OpenFeature provider — rebuilds the next flag set with :func:`apply_delta`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

JSON = Any


def canonical(value: JSON) -> bytes:
    # Compare serialised forms: in Python 1 == 1.0 == True, in JSON they are three values.
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def _diff(old: Mapping[str, JSON], new: Mapping[str, JSON]) -> tuple[dict[str, JSON], list[str]]:
    changed = {
        key: value
        for key, value in new.items()
        if key not in old or canonical(old[key]) != canonical(value)
    }
    removed = sorted(key for key in old if key not in new)
    return changed, removed


def compute_delta(old: Mapping[str, JSON] | None, new: Mapping[str, JSON]) -> dict[str, JSON]:
    """What turns flag set ``old`` into ``new`` (``old`` None: everything is new).

    ``{"flags": {key: definition}, "removed": [key…], "evaluators": {name: fragment},
    "removedEvaluators": [name…]}``, plus ``"metadata"`` (the whole new top-level
    metadata) only when that changed.
    """
    before: Mapping[str, JSON] = old or {}
    flags, removed = _diff(before.get("flags") or {}, new.get("flags") or {})
    evaluators, removed_evaluators = _diff(
        before.get("$evaluators") or {}, new.get("$evaluators") or {}
    )
    delta: dict[str, JSON] = {
        "flags": flags,
        "removed": removed,
        "evaluators": evaluators,
        "removedEvaluators": removed_evaluators,
    }
    new_metadata = new.get("metadata") or {}
    if old is not None and canonical(before.get("metadata") or {}) != canonical(new_metadata):
        delta["metadata"] = new_metadata
    return delta


def is_empty(delta: Mapping[str, JSON]) -> bool:
    """Whether ``delta`` changes nothing (a version that moved only for the keys or the
    plan): no SDK is sent a patch for it."""
    return not (
        delta.get("flags")
        or delta.get("removed")
        or delta.get("evaluators")
        or delta.get("removedEvaluators")
        or "metadata" in delta
    )


def apply_delta(flag_set: Mapping[str, JSON], delta: Mapping[str, JSON]) -> dict[str, JSON]:
    """``flag_set`` with ``delta`` applied (what a stream client does with a patch)."""
    flags = dict(flag_set.get("flags") or {})
    for key in delta.get("removed", ()):
        flags.pop(key, None)
    flags.update(delta.get("flags") or {})
    evaluators = dict(flag_set.get("$evaluators") or {})
    for name in delta.get("removedEvaluators", ()):
        evaluators.pop(name, None)
    evaluators.update(delta.get("evaluators") or {})
    out: dict[str, JSON] = {k: v for k, v in flag_set.items() if k != "$evaluators"}
    out["flags"] = flags
    if "metadata" in delta:
        out["metadata"] = delta["metadata"]
    if evaluators:
        out["$evaluators"] = evaluators
    return out
