"""The held flag set: versions only move forward, patches apply only where they fit,
and the changed keys are the flags whose answers may differ. Pure, no I/O."""

from __future__ import annotations

from typing import Any

import pytest

from crivline.delta import compute_delta
from crivline_openfeature.errors import BadFlagSet
from crivline_openfeature.held import FlagSetHolder, PatchGap, changed_flags


def doc(**flags: Any) -> dict[str, Any]:
    return {"flags": flags}


def toggle(default: str = "on", **extra: Any) -> dict[str, Any]:
    return {
        "state": "ENABLED",
        "variants": {"on": True, "off": False},
        "defaultVariant": default,
        **extra,
    }


def patch(old: dict[str, Any], new: dict[str, Any], base: int, version: int) -> dict[str, Any]:
    return {"version": version, "base": base, **compute_delta(old, new)}


def test_a_put_is_compiled_and_an_older_or_equal_one_ignored() -> None:
    holder = FlagSetHolder()
    first = holder.put(5, doc(a=toggle()))
    assert first is not None
    assert first.changed == ("a",)
    assert first.previous is None
    assert holder.current is not None
    assert holder.current.flags.evaluate("a", {}).value is True
    assert holder.put(5, doc(a=toggle("off"))) is None
    assert holder.put(4, doc(a=toggle("off"))) is None
    assert holder.version == 5
    newer = holder.put(9, doc(a=toggle("off"), b=toggle()))
    assert newer is not None
    assert newer.changed == ("a", "b")
    assert holder.current.flags.evaluate("a", {}).value is False


def test_a_patch_applies_only_to_its_base() -> None:
    holder = FlagSetHolder()
    v1, v2, v3 = doc(a=toggle()), doc(a=toggle("off")), doc(a=toggle("off"), b=toggle())
    holder.put(1, v1)
    applied = holder.patch(patch(v1, v2, 1, 2))
    assert applied is not None
    assert applied.changed == ("a",)
    assert holder.version == 2
    assert holder.patch(patch(v1, v2, 1, 2)) is None  # the same patch again: ignored
    with pytest.raises(PatchGap) as gap:
        holder.patch(patch(v2, v3, 3, 4))  # 3 → 4 was made from a version never held
    assert (gap.value.held, gap.value.base, gap.value.version) == (2, 3, 4)
    assert holder.version == 2
    applied = holder.patch(patch(v2, v3, 2, 3))
    assert applied is not None
    assert applied.changed == ("b",)
    assert holder.current is not None
    assert holder.current.document == v3


def test_a_patch_before_any_put_is_a_gap() -> None:
    with pytest.raises(PatchGap):
        FlagSetHolder().patch({"version": 2, "base": 1, "flags": {}})


@pytest.mark.parametrize(
    ("version", "body"),
    [
        (-1, doc()),
        (1, []),
        (1, {"no": "flags"}),
        (1, {"flags": []}),
    ],
)
def test_what_is_not_a_flag_set_is_refused_and_nothing_changes(version: int, body: Any) -> None:
    holder = FlagSetHolder()
    with pytest.raises(BadFlagSet):
        holder.put(version, body)
    assert holder.current is None


@pytest.mark.parametrize(
    "body", [[], {"version": "2", "base": 1}, {"version": 2}, {"version": 2, "base": -1}]
)
def test_a_malformed_patch_is_refused(body: Any) -> None:
    holder = FlagSetHolder()
    holder.put(1, doc(a=toggle()))
    with pytest.raises(BadFlagSet):
        holder.patch(body)
    assert holder.version == 1


def test_changed_flags_follow_segments_and_metadata() -> None:
    uses_pros = toggle(targeting={"if": [{"$ref": "pros"}, "on", "off"]})
    uses_both = toggle(targeting={"if": [{"$ref": "wide"}, "on", "off"]})
    old = {
        "flags": {"a": uses_pros, "b": uses_both, "c": toggle()},
        "$evaluators": {"pros": {"==": [1, 1]}, "wide": {"or": [{"$ref": "pros"}, False]}},
    }
    new = {**old, "$evaluators": {**old["$evaluators"], "pros": {"==": [1, 2]}}}
    assert changed_flags(old, new) == ["a", "b"]  # b reaches pros through wide
    new_meta = {**old, "metadata": {"team": "x"}}
    assert changed_flags(old, new_meta) == ["a", "b", "c"]
    fewer = {**old, "flags": {"a": uses_pros, "b": uses_both}}
    assert changed_flags(old, fewer) == ["c"]
    assert changed_flags(old, old) == []
    assert changed_flags(None, old) == ["a", "b", "c"]
    # 1 and 1.0 and True are different JSON values
    assert changed_flags(doc(n={"v": 1}), doc(n={"v": 1.0})) == ["n"]
