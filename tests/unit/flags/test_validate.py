"""Validation: every problem, at its path, in a sentence."""

from __future__ import annotations

import math
from typing import Any

import pytest
from flagkit import flag

from crivline.flags import (
    FlagSetError,
    Limits,
    Problem,
    validate_flag,
    validate_flag_set,
    validate_segment,
)


def problems(doc: Any, **options: Any) -> list[Problem]:
    with pytest.raises(FlagSetError) as info:
        validate_flag_set(doc, **options)
    assert info.value.problems, "a FlagSetError must say what is wrong"
    return info.value.problems


def assert_problem(found: list[Problem], path: str, words: str) -> None:
    at_path = [p.message for p in found if p.path == path]
    assert at_path, f"no problem at {path!r}; problems: {found}"
    assert any(words in m for m in at_path), f"{words!r} not in {at_path}"


GOOD = {
    "$schema": "https://flagd.dev/schema/v0/flags.json",
    "flags": {
        "new-checkout": flag(
            {
                "if": [
                    {"$ref": "staff"},
                    "on",
                    {"fractional": [{"var": "user.id"}, ["on", 10], ["off", 90]]},
                ]
            },
            metadata={"owner": "payments", "ticket": 12, "beta": True, "ratio": 0.5},
        ),
        "banner": {
            "state": "DISABLED",
            "variants": {"blue": {"color": "#00f"}, "red": {"color": "#f00"}},
            "defaultVariant": None,
        },
        "api.version": {
            "state": "ENABLED",
            "variants": {"v1": 1, "v2": 2.5},
            "defaultVariant": "v1",
            "targeting": {
                "if": [
                    {"sem_ver": [{"var": "app"}, ">=", "2.0.0"]},
                    "v2",
                    {"regex_match": [{"var": "email"}, "@example\\.(com|org)$"]},
                    "v2",
                    None,
                ]
            },
        },
        "shorthand": flag({"fractional": [["on"], ["off", 3]]}),
        "bools": flag(
            {"==": [{"var": "plan"}, "pro"]},
            variants={"true": 1, "false": 0},
            defaultVariant="false",
        ),
    },
    "$evaluators": {
        "staff": {"ends_with": [{"var": "email"}, "@crivline.dev"]},
        "staff_or_beta": {"or": [{"$ref": "staff"}, {"in": ["beta", {"var": "tags"}]}]},
    },
    "metadata": {"flagSetId": "shop/prod", "version": 3},
}


def test_a_good_flag_set_passes() -> None:
    assert (
        validate_flag_set(GOOD, types={"new-checkout": "boolean", "api.version": "float"}) is None
    )


def test_the_example_path_of_the_brief() -> None:
    doc = {"flags": {"new-checkout": flag({"if": [{"in": [{"var": "email"}, {}]}, "on", "off"]})}}
    assert_problem(problems(doc), "flags.new-checkout.targeting.if[0].in[1]", "empty object")


def test_all_problems_are_reported_not_just_the_first() -> None:
    doc = {
        "flags": {
            "a": flag({"nope": [1]}),
            "b": flag(defaultVariant="maybe"),
            "c": flag({"==": [1]}),
            "-bad key": flag(),
        },
        "$evaluators": {"loop": {"!": {"$ref": "loop"}}},
        "extra": 1,
    }
    found = problems(doc)
    assert_problem(found, "flags.a.targeting.nope", "unknown operation 'nope'")
    assert_problem(found, "flags.b.defaultVariant", "not one of the variants")
    assert_problem(found, "flags.c.targeting.==", "takes exactly 2 arguments, got 1")
    assert_problem(found, 'flags["-bad key"]', "not a valid flag key")
    assert_problem(found, "$evaluators.loop", "cycle: loop → loop")
    assert_problem(found, "extra", "unknown field")
    assert len(found) == 6


@pytest.mark.parametrize(
    ("targeting", "path", "words"),
    [
        ({"starts_wth": ["a", "b"]}, "starts_wth", "did you mean 'starts_with'?"),
        ({"regex": [{"var": "a"}, "b"]}, "regex", "did you mean 'regex_match'?"),
        ({"if": [{"!": []}, "on", "off"]}, "if[0].!", "takes exactly 1 argument, got 0"),
        ({"sem_ver": [{"var": "v"}, "==="]}, "sem_ver", "takes exactly 3 arguments, got 2"),
        ({"sem_ver": [{"var": "v"}, "===", "1.0.0"]}, "sem_ver[1]", "operator must be one of"),
        ({"sem_ver": [{"var": "v"}, ">", "1.0.0.0"]}, "sem_ver[2]", "not a semantic version"),
        ({"starts_with": [{"var": "id"}, 3]}, "starts_with[1]", "works on strings"),
        ({"regex_match": [{"var": "e"}, "(a)\\1"]}, "regex_match[1]", "not a valid RE2"),
        ({"regex_match": [{"var": "e"}, "(?=x)"]}, "regex_match[1]", "not a valid RE2"),
        ({"regex_match": [{"var": "e"}, {"var": "p"}]}, "regex_match[1]", "literal string"),
        ({"var": True}, "var", "takes a path"),
        ({"$ref": "nowhere"}, "$ref", "segment 'nowhere', which does not exist"),
        ({"$ref": 5}, "$ref", "takes the name of a segment"),
        ({"==": [1, 2], "!=": [1, 2]}, "", "exactly one operation"),
        ({"if": [True, "of", "off"]}, "if[1]", "no such variant"),
        ({"if": [True, ["on"], "off"]}, "if[1]", "cannot name a variant"),
        ({"if": [True, 1.5, "off"]}, "if[1]", "no such variant"),
        ({"fractional": []}, "fractional", "takes at least 1 argument"),
        ({"fractional": [{"var": "id"}]}, "fractional", "at least one bucket"),
        ({"fractional": [5, ["on", 1]]}, "fractional[0]", "bucketing value"),
        ({"fractional": [["on", -1], ["off", 1]]}, "fractional[0][1]", "whole number"),
        ({"fractional": [["on", 0.5], ["off", 1]]}, "fractional[0][1]", "whole number"),
        ({"fractional": [["on", 0], ["off", 0]]}, "fractional", "add up to 0"),
        ({"fractional": [["on", 2**31], ["off", 1]]}, "fractional", "over flagd's limit"),
        ({"fractional": [["on", 1], "off"]}, "fractional[1]", "a bucket is"),
        ({"fractional": [["nope", 1], ["off", 1]]}, "fractional[0][0]", "no such variant"),
    ],
)
def test_rule_problems(targeting: Any, path: str, words: str) -> None:
    doc = {"flags": {"f": flag(targeting)}}
    base = "flags.f.targeting"
    assert_problem(problems(doc), f"{base}.{path}" if path else base, words)


@pytest.mark.parametrize(
    ("definition", "path", "words"),
    [
        ({"variants": {"a": 1}}, "flags.f.state", "state is required"),
        (flag(state="ON"), "flags.f.state", "ENABLED or DISABLED"),
        ({"state": "ENABLED"}, "flags.f.variants", "variants are required"),
        (flag(variants=[1, 2]), "flags.f.variants", "must be an object"),
        (flag(variants={}, defaultVariant=None), "flags.f.variants", "at least one variant"),
        (flag(variants={"a": None}, defaultVariant="a"), "flags.f.variants.a", "null"),
        (flag(variants={"a": 1, "b": "x"}, defaultVariant="a"), "flags.f.variants", "same type"),
        (flag(defaultVariant=""), "flags.f.defaultVariant", "cannot be empty"),
        (flag(defaultVariant=2), "flags.f.defaultVariant", "variant name or null"),
        (flag(targeting="on"), "flags.f.targeting", "must be a JSONLogic rule"),
        (flag(metadata={"a": [1]}), "flags.f.metadata.a", "strings, numbers or booleans"),
        (flag(metadata="x"), "flags.f.metadata", "must be an object"),
        (flag(enabled=True), "flags.f.enabled", "unknown field"),
        ("on", "flags.f", "a flag must be an object"),
    ],
)
def test_flag_problems(definition: Any, path: str, words: str) -> None:
    assert_problem(problems({"flags": {"f": definition}}), path, words)


@pytest.mark.parametrize(
    ("flag_type", "variants", "bad"),
    [
        ("boolean", {"on": True, "off": 0}, "off"),
        ("string", {"a": "x", "b": 1}, "b"),
        ("integer", {"a": 1, "b": 1.5}, "b"),
        ("integer", {"a": 1, "b": True}, "b"),
        ("float", {"a": 1.5, "b": "2"}, "b"),
        ("object", {"a": {}, "b": "{}"}, "b"),
    ],
)
def test_declared_types(flag_type: str, variants: dict[str, Any], bad: str) -> None:
    doc = {"flags": {"f": flag(variants=variants, defaultVariant=None)}}
    found = problems(doc, types={"f": flag_type})
    assert_problem(found, f"flags.f.variants.{bad}", f"not a valid {flag_type} value")
    assert len(found) == 1


@pytest.mark.parametrize(
    ("flag_type", "variants"),
    [
        ("float", {"a": 1, "b": 2.5}),  # integers are numbers too
        ("object", {"a": {}, "b": [1]}),
        (None, {"a": 1, "b": 2.5}),
        (None, {"a": {"x": 1}, "b": ["y"]}),
    ],
)
def test_types_that_pass(flag_type: str | None, variants: dict[str, Any]) -> None:
    validate_flag_set(
        {"flags": {"f": flag(variants=variants, defaultVariant="a")}},
        types={"f": flag_type} if flag_type else None,
    )


def test_unknown_declared_type() -> None:
    assert_problem(problems({"flags": {"f": flag()}}, types={"f": "date"}), "flags.f", "type")


@pytest.mark.parametrize(
    "key", ["-start", "_x", "", "a" * 129, "with space", "ключ", "tab\t", "new\n"]
)
def test_bad_flag_keys(key: str) -> None:
    found = problems({"flags": {key: flag()}})
    assert any("not a valid flag key" in p.message for p in found)


@pytest.mark.parametrize("key", ["a", "A9", "new-checkout", "a.b_c-d", "9" + "x" * 127])
def test_good_flag_keys(key: str) -> None:
    validate_flag(key, flag())


def test_keys_with_dots_are_quoted_in_paths() -> None:
    assert_problem(problems({"flags": {"my.flag": flag(state=1)}}), 'flags["my.flag"].state', "")


@pytest.mark.parametrize(
    ("doc", "path", "words"),
    [
        ([], "", "must be a JSON object"),
        ({}, "flags", "needs 'flags'"),
        ({"flags": []}, "flags", "must be an object"),
        ({"flags": {}, "$evaluators": []}, "$evaluators", "must be an object"),
        ({"flags": {}, "metadata": {"x": None}}, "metadata.x", "strings, numbers"),
        ({"flags": {}, "$schema": 1}, "$schema", "must be a string"),
        (
            {"flags": {"f": flag(variants={"a": math.nan}, defaultVariant="a")}},
            "flags.f.variants.a",
            "finite",
        ),
        ({"flags": {"f": flag(metadata={"big": 2**70})}}, "flags.f.metadata.big", "64 bits"),
        ({"flags": {1: flag()}}, "flags", "keys must be strings"),
        (
            {"flags": {"f": flag(variants={"a": {1, 2}}, defaultVariant="a")}},
            "flags.f.variants.a",
            "not a JSON value",
        ),
    ],
)
def test_document_problems(doc: Any, path: str, words: str) -> None:
    assert_problem(problems(doc), path, words)


def test_size_limit() -> None:
    doc = {"flags": {"f": flag(metadata={"note": "x" * 500})}}
    assert_problem(problems(doc, limits=Limits(max_bytes=300)), "", "over the limit of 300")
    validate_flag_set(doc)


def test_depth_limit() -> None:
    deep: Any = "on"
    for _ in range(10):
        deep = {"if": [True, deep, "off"]}
    doc = {"flags": {"f": flag(deep)}}
    found = problems(doc, limits=Limits(max_depth=12))
    assert any("nested deeper than the limit of 12" in p.message for p in found)
    validate_flag_set(doc)


def test_very_deep_documents_are_refused_without_recursion_errors() -> None:
    deep: Any = "on"
    for _ in range(100_000):
        deep = [deep]
    found = problems({"flags": {"f": flag({"if": [True, "on", deep]})}})
    assert any("nested deeper" in p.message for p in found)


def test_segment_cycles() -> None:
    doc = {
        "flags": {"f": flag({"if": [{"$ref": "a"}, "on", "off"]})},
        "$evaluators": {"a": {"!": {"$ref": "b"}}, "b": {"and": [True, {"$ref": "a"}]}},
    }
    found = problems(doc)
    assert_problem(found, "$evaluators.a", "cycle: a → b → a")
    assert_problem(found, "$evaluators.b", "cycle: b → a → b")
    assert_problem(found, "flags.f.targeting", "uses segment 'a'")


def test_exponential_expansion_is_refused() -> None:
    segments: dict[str, Any] = {"s0": {"==": [{"var": "x"}, 1]}}
    for i in range(1, 30):
        segments[f"s{i}"] = {"or": [{"$ref": f"s{i - 1}"}, {"$ref": f"s{i - 1}"}]}
    doc = {"flags": {"f": flag({"if": [{"$ref": "s29"}, "on", "off"]})}, "$evaluators": segments}
    found = problems(doc)
    assert_problem(found, "flags.f.targeting", "expands to more than 20000 nodes")
    assert_problem(found, "$evaluators.s29", "expands to more than 20000 nodes")
    assert not any(p.path == "$evaluators.s5" for p in found)


def test_validate_flag_alone() -> None:
    validate_flag(
        "f",
        flag({"if": [{"$ref": "vip"}, "on", "off"]}),
        flag_type="boolean",
        segments={"vip": {"==": [{"var": "tier"}, "vip"]}},
    )
    with pytest.raises(FlagSetError) as info:
        validate_flag("f", flag({"$ref": "vip"}), flag_type="string", segments={})
    paths = {p.path for p in info.value.problems}
    assert paths == {"variants.on", "variants.off", "targeting.$ref"}


def test_validate_segment_alone() -> None:
    validate_segment("vip", {"in": [{"var": "email"}, ["a@b.c"]]})
    validate_segment("both", {"and": [{"$ref": "vip"}, True]}, segments={"vip": {"!": [False]}})
    for name, fragment, segments, words in [
        ("vip", {}, {}, "must be a JSONLogic rule"),
        ("vip", "yes", {}, "must be a JSONLogic rule"),
        ("bad name", {"!": [True]}, {}, "not a valid segment name"),
        ("vip", {"$ref": "other"}, {}, "does not exist"),
        ("vip", {"!": {"$ref": "other"}}, {"other": {"$ref": "vip"}}, "cycle: vip → other → vip"),
        ("vip", {"bogus": []}, {}, "unknown operation"),
    ]:
        with pytest.raises(FlagSetError) as info:
            validate_segment(name, fragment, segments=segments)
        assert any(words in p.message for p in info.value.problems), (name, fragment)


def test_error_message_summarises_problems() -> None:
    with pytest.raises(FlagSetError) as info:
        validate_flag_set({"flags": {"a": 1, "b": 2, "c": 3, "d": 4}})
    text = str(info.value)
    assert text.startswith("4 problems: flags.a: a flag must be an object")
    assert text.endswith("(and 1 more)")
    assert str(Problem("", "x")) == "x"


def test_a_huge_depth_limit_still_raises_only_flag_set_errors() -> None:
    deep: Any = "on"
    for _ in range(50_000):
        deep = {"!": [deep]}
    found = problems({"flags": {"f": flag(deep)}}, limits=Limits(max_depth=10**9))
    assert any("nested too deeply to check" in p.message for p in found)
