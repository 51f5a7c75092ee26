"""Recompiling a flag set in proportion to the change (crivline.flags.incremental): the
result always answers like a full compile, and untouched flags are not compiled again."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from crivline.flags import compile_flag_set
from crivline.flags.incremental import recompile_flag_set

CONTEXTS = [
    {},
    {"targetingKey": "user-1", "plan": "pro", "email": "a@acme.io"},
    {"targetingKey": "user-2", "plan": "free", "email": "b@example.com"},
]


def document() -> dict[str, Any]:
    return {
        "$evaluators": {
            "pros": {"in": [{"var": "plan"}, ["pro", "enterprise"]]},
            "acme": {"ends_with": [{"var": "email"}, "@acme.io"]},
            "acme-pros": {"and": [{"$ref": "acme"}, {"$ref": "pros"}]},
        },
        "metadata": {"flagSetId": "shop"},
        "flags": {
            "static": {"state": "ENABLED", "variants": {"on": True, "off": False},
                       "defaultVariant": "on"},
            "pro-only": {"state": "ENABLED", "variants": {"on": True, "off": False},
                         "defaultVariant": "off",
                         "targeting": {"if": [{"$ref": "pros"}, "on", "off"]}},
            "acme-pros": {"state": "ENABLED", "variants": {"on": True, "off": False},
                          "defaultVariant": "off",
                          "targeting": {"if": [{"$ref": "acme-pros"}, "on", "off"]}},
            "split": {"state": "ENABLED", "variants": {"a": "a", "b": "b"},
                      "defaultVariant": "a",
                      "targeting": {"fractional": [["a", 50], ["b", 50]]}},
        },
    }  # fmt: skip


def answers(doc: dict[str, Any]) -> list[Any]:
    compiled = compile_flag_set(doc)
    return [compiled.evaluate(k, c) for k in doc["flags"] for c in CONTEXTS]


def recompiled_answers(before: dict[str, Any], after: dict[str, Any]) -> list[Any]:
    compiled = recompile_flag_set(before, compile_flag_set(before), after)
    return [compiled.evaluate(k, c) for k in after["flags"] for c in CONTEXTS]


def reused(before: dict[str, Any], after: dict[str, Any]) -> set[str]:
    """The flags whose compiled evaluation is the very object of the previous version."""
    previous = compile_flag_set(before)
    compiled = recompile_flag_set(before, previous, after)
    kept = set()
    for key in after["flags"]:
        now, was = compiled.compiled(key), previous.compiled(key)
        if now is not None and was is not None and now[0] is was[0]:
            kept.add(key)
    return kept


def changed_flag(doc: dict[str, Any]) -> None:
    doc["flags"]["static"]["defaultVariant"] = "off"


def changed_evaluator(doc: dict[str, Any]) -> None:
    doc["$evaluators"]["pros"] = {"==": [{"var": "plan"}, "pro"]}


def added_and_removed(doc: dict[str, Any]) -> None:
    del doc["flags"]["split"]
    doc["flags"]["new"] = {"state": "DISABLED", "variants": {"x": 1}, "defaultVariant": "x"}


def changed_metadata(doc: dict[str, Any]) -> None:
    doc["metadata"]["owner"] = "team-b"


CHANGES = {
    "one flag": (changed_flag, {"pro-only", "acme-pros", "split"}),
    # acme-pros reaches pros through the acme-pros evaluator: compiled again as well
    "an evaluator": (changed_evaluator, {"static", "split"}),
    "a flag added and one removed": (added_and_removed, {"static", "pro-only", "acme-pros"}),
    "the set's metadata": (changed_metadata, set()),
}


@pytest.mark.parametrize("name", list(CHANGES))
def test_recompiling_answers_like_a_full_compile_and_reuses_only_the_untouched(
    name: str,
) -> None:
    change, untouched = CHANGES[name]
    before = document()
    after = copy.deepcopy(before)
    change(after)
    assert recompiled_answers(before, after) == answers(after)
    assert reused(before, after) == untouched


def test_a_ref_to_an_evaluator_that_appears_is_compiled_again() -> None:
    before = document()
    before["flags"]["late"] = {
        "state": "ENABLED",
        "variants": {"on": True, "off": False},
        "defaultVariant": "off",
        "targeting": {"if": [{"$ref": "later"}, "on", "off"]},
    }
    after = copy.deepcopy(before)
    after["$evaluators"]["later"] = {"==": [{"var": "plan"}, "pro"]}
    assert recompiled_answers(before, after) == answers(after)
    assert "late" not in reused(before, after)
    assert answers(after) != answers(before)


def test_a_previous_document_without_flags_compiles_everything() -> None:
    after = document()
    previous = compile_flag_set({"flags": {}})
    compiled = recompile_flag_set({"not": "a flag set"}, previous, after)
    assert [compiled.evaluate(k, c) for k in after["flags"] for c in CONTEXTS] == answers(after)


def test_a_v3_flag_set_recompiled_buckets_with_v3() -> None:
    """The bucketing scheme named by the set's metadata holds for recompiled flags too
    (one context per bucket-dependent key, enough that v2 and v3 disagree somewhere)."""
    before = document()
    before["metadata"]["fractionalBucketing"] = "v3"
    after = copy.deepcopy(before)
    after["flags"]["split"]["targeting"] = {"fractional": [["a", 30], ["b", 70]]}
    contexts = [{"targetingKey": f"user-{n}"} for n in range(200)]
    full = compile_flag_set(after)
    partial = recompile_flag_set(before, compile_flag_set(before), after)
    v2 = compile_flag_set({**after, "metadata": {"flagSetId": "shop"}})
    assert [partial.evaluate("split", c).variant for c in contexts] == [
        full.evaluate("split", c).variant for c in contexts
    ]
    assert [full.evaluate("split", c).variant for c in contexts] != [
        v2.evaluate("split", c).variant for c in contexts
    ]
