"""Evaluating flags: reasons, defaults, errors, metadata, OFREP bodies, prebuilt results."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import orjson
import pytest
from flagkit import flag

from crivline.flags import (
    CompiledFlagSet,
    ErrorCode,
    FlagSetError,
    Reason,
    Resolution,
    compile_flag_set,
    ofrep_bulk_body,
)


def one(definition: dict[str, Any], **options: Any) -> CompiledFlagSet:
    return compile_flag_set({"flags": {"f": definition}}, **options)


def evaluate(definition: dict[str, Any], context: Any = None, **options: Any) -> Resolution:
    return one(definition, **options).evaluate("f", {} if context is None else context)


def test_static_flag() -> None:
    r = evaluate(flag())
    assert (r.value, r.variant, r.reason, r.error_code) == (False, "off", Reason.STATIC, None)


@pytest.mark.parametrize("targeting", [{}, None])
def test_empty_targeting_is_static(targeting: Any) -> None:
    r = evaluate({**flag(), "targeting": targeting})
    assert r.reason == Reason.STATIC


def test_targeting_match_and_default() -> None:
    rule = {"if": [{"==": [{"var": "email"}, "a@b.c"]}, "on", None]}
    assert evaluate(flag(rule), {"email": "a@b.c"}).reason == Reason.TARGETING_MATCH
    r = evaluate(flag(rule), {"email": "x@y.z"})
    assert (r.value, r.variant, r.reason) == (False, "off", Reason.DEFAULT)


def test_boolean_targeting_result_names_a_variant() -> None:
    d = flag({"==": [{"var": "plan"}, "pro"]}, variants={"true": 2, "false": 1})
    assert evaluate(d, {"plan": "pro"}).value == 2
    assert evaluate(d, {"plan": "free"}).value == 1


@pytest.mark.parametrize("default", [None, "absent"])
def test_no_default_variant_means_code_default(default: str | None) -> None:
    d = flag({"if": [{"var": "vip"}, "on", None]})
    if default == "absent":
        del d["defaultVariant"]
    else:
        d["defaultVariant"] = None
    r = evaluate(d, {})
    assert (r.value, r.variant, r.reason, r.error_code) == (None, None, Reason.DEFAULT, None)
    assert not r.has_value
    assert evaluate(d, {"vip": True}).value is True
    static = evaluate({**d, "targeting": {}})
    assert (static.value, static.reason) == (None, Reason.DEFAULT)


def test_disabled() -> None:
    r = evaluate(flag({"if": [True, "on", "off"]}, state="DISABLED"))
    assert (r.value, r.variant, r.reason, r.error_code) == (None, None, Reason.DISABLED, None)


@pytest.mark.parametrize(
    ("variants", "default", "value"),
    [
        ({"zero": False, "one": True}, "zero", False),
        ({"zero": "", "one": "x"}, "zero", ""),
        ({"zero": 0, "one": 1}, "zero", 0),
        ({"zero": 0.0, "one": 1.0}, "zero", 0.0),
        ({"zero": {}, "one": {"a": 1}}, "zero", {}),
        ({"zero": [], "one": [1]}, "zero", []),
    ],
)
def test_zero_values_are_values(variants: dict[str, Any], default: str, value: Any) -> None:
    r = evaluate(flag(variants=variants, defaultVariant=default))
    assert r.has_value
    assert (type(r.value), r.value) == (type(value), value)
    assert "value" in r.to_dict()


def test_floats_stay_floats_and_ints_stay_ints() -> None:
    assert type(evaluate(flag(variants={"a": 1.0, "b": 2.5}, defaultVariant="a")).value) is float
    assert type(evaluate(flag(variants={"a": 1, "b": 2}, defaultVariant="a")).value) is int
    # a float flag serves floats, even for variants written as integers
    mixed = evaluate(flag(variants={"a": 1, "b": 2.5}, defaultVariant="a"))
    assert (type(mixed.value), mixed.value) == (float, 1.0)
    declared = evaluate(flag(variants={"a": 1, "b": 2}, defaultVariant="a"), types={"f": "float"})
    assert type(declared.value) is float
    assert orjson.dumps(declared.to_dict()["value"]) == b"1.0"


def test_a_fractional_choice_is_a_targeting_match_as_in_flagd() -> None:
    d = flag({"fractional": [{"var": "targetingKey"}, ["on", 50], ["off", 50]]})
    assert evaluate(d, {"targetingKey": "u1"}).reason == Reason.TARGETING_MATCH
    assert evaluate(d, {}).reason == Reason.DEFAULT  # no bucketing value: no split
    nested = flag(
        {"if": [{"var": "beta"}, {"fractional": [["on", 1], ["off", 1]]}, "off"]},
    )
    assert evaluate(nested, {"beta": True, "targetingKey": "u"}).reason == Reason.TARGETING_MATCH
    assert evaluate(nested, {"beta": False}).reason == Reason.TARGETING_MATCH
    condition = flag({"if": [{"fractional": [[False, 0], [True, 1]]}, "on", "off"]})
    assert evaluate(condition, {"targetingKey": "u"}).reason == Reason.TARGETING_MATCH


def test_metadata_merges_flag_over_set() -> None:
    doc = {
        "flags": {
            "f": flag(metadata={"owner": "team-a", "n": 1}),
            "g": flag(),
        },
        "metadata": {"owner": "platform", "flagSetId": "p/e"},
    }
    flags = compile_flag_set(doc)
    assert flags.evaluate("f", {}).metadata == {"owner": "team-a", "n": 1, "flagSetId": "p/e"}
    assert flags.evaluate("g", {}).metadata == {"owner": "platform", "flagSetId": "p/e"}
    assert flags.metadata == {"owner": "platform", "flagSetId": "p/e"}


def test_flag_not_found() -> None:
    r = one(flag()).evaluate("nope", {})
    assert (r.reason, r.error_code, r.value) == (Reason.ERROR, ErrorCode.FLAG_NOT_FOUND, None)
    assert r.to_dict() == {
        "key": "nope",
        "errorCode": "FLAG_NOT_FOUND",
        "errorDetails": "flag 'nope' does not exist",
    }


@pytest.mark.parametrize("context", [None, [], "user", 3, ("a",)])
def test_context_must_be_an_object(context: Any) -> None:
    flags = one(flag(metadata={"m": 1}))
    r = flags.evaluate("f", context)
    assert (r.reason, r.error_code) == (Reason.ERROR, ErrorCode.INVALID_CONTEXT)
    assert r.metadata == {"m": 1}
    assert [x.error_code for x in flags.evaluate_all(context)] == [ErrorCode.INVALID_CONTEXT]


@pytest.mark.parametrize(
    "definition",
    [
        flag({"nope": [1]}),
        flag({"if": [{"$ref": "missing"}, "on", "off"]}),
        flag("not a rule"),
        flag([1]),
        flag(state="MAYBE"),
        flag(variants=[]),
        flag(defaultVariant=3),
        "not a flag",
    ],
)
def test_broken_flags_answer_parse_error(definition: Any) -> None:
    r = compile_flag_set({"flags": {"f": definition, "ok": flag()}}).evaluate("f", {})
    assert (r.reason, r.error_code, r.value) == (Reason.ERROR, ErrorCode.PARSE_ERROR, None)
    assert r.error_message


def test_unknown_variant_is_a_general_error() -> None:
    r = evaluate(flag({"if": [True, "three", "on"]}))
    assert (r.reason, r.error_code) == (Reason.ERROR, ErrorCode.GENERAL)
    assert "three" in (r.error_message or "")
    dynamic = evaluate(flag({"var": "choice"}), {"choice": "maybe"})
    assert dynamic.error_code == ErrorCode.GENERAL
    assert evaluate(flag({"var": "choice"}), {"choice": "on"}).value is True
    array = evaluate(flag({"var": "choice"}), {"choice": ["on"]})
    assert array.error_code == ErrorCode.GENERAL


def test_missing_default_variant_is_a_general_error() -> None:
    r = evaluate(flag(defaultVariant="gone"))
    assert r.error_code == ErrorCode.GENERAL


class _Exploding(Mapping[str, Any]):
    """Context data whose lookups fail: a stand-in for a bug in an operation."""

    def __getitem__(self, key: str) -> Any:
        raise RuntimeError("lookup failed")

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def test_exceptions_in_targeting_become_general_errors() -> None:
    rule = {"if": [{"==": [{"var": "a.b"}, 1]}, "on", "off"]}
    r = evaluate(flag(rule), {"a": _Exploding()})
    assert (r.reason, r.error_code) == (Reason.ERROR, ErrorCode.GENERAL)
    assert r.error_message == "targeting failed on this context; it has been logged"
    assert evaluate(flag(rule), {"a": {"b": 1}}).value is True


def test_a_huge_integer_is_a_double_like_in_javascript() -> None:
    # beyond the double range it is Infinity, as Number(10**400) is in JavaScript
    rule = {"if": [{">": [{"*": [{"var": "n"}, 1.5]}, 1]}, "on", "off"]}
    assert evaluate(flag(rule), {"n": 10**400}).value is True
    assert evaluate(flag(rule), {"n": -(10**400)}).value is False
    assert evaluate(flag(rule), {"n": 2}).value is True


def test_context_enrichment() -> None:
    d = flag({"if": [{"==": [{"var": "$flagd.flagKey"}, "f"]}, "on", "off"]})
    assert evaluate(d).value is True
    ts = flag({"if": [{">": [{"var": "$flagd.timestamp"}, {"var": "time"}]}, "on", "off"]})
    assert evaluate(ts, {"time": 1}).value is True
    assert evaluate(ts, {"time": 4133980802}).value is False


def test_static_context_is_merged_under_the_request() -> None:
    d = flag({"if": [{"==": [{"var": "region"}, "eu"]}, "on", "off"]})
    assert evaluate(d, {}, static_context={"region": "eu"}).value is True
    assert evaluate(d, {"region": "us"}, static_context={"region": "eu"}).value is False


def test_results_are_prebuilt_and_shared() -> None:
    flags = one(flag({"if": [{"==": [{"var": "plan"}, "pro"]}, "on", "off"]}))
    a = flags.evaluate("f", {"plan": "pro"})
    b = flags.evaluate("f", {"plan": "pro"})
    assert a is b
    assert a.to_json() is a.to_json()  # serialized once
    static = one(flag())
    assert static.evaluate("f", {}) is static.evaluate("f", {"x": 1})


def test_constant_targeting_folds_to_a_result() -> None:
    flags = one(flag({"if": [{"==": [{"var": "$flagd.flagKey"}, "f"]}, "on", "off"]}))
    assert isinstance(flags._entries["f"], Resolution)
    assert flags.evaluate("f", {}).reason == Reason.TARGETING_MATCH


def test_results_are_immutable() -> None:
    r = evaluate(flag())
    with pytest.raises(AttributeError):
        r.value = True
    with pytest.raises(AttributeError):
        del r.reason


def test_ofrep_bodies() -> None:
    doc = {
        "flags": {
            "a": flag(metadata={"m": "x"}),
            "b": flag(defaultVariant=None),
            "c": flag(state="DISABLED"),
            "d": flag({"nope": []}),
        },
        "metadata": {"flagSetId": "s"},
    }
    flags = compile_flag_set(doc)
    a, b, c, d = flags.evaluate_all({})
    assert orjson.loads(a.to_json()) == {
        "key": "a",
        "value": False,
        "variant": "off",
        "reason": "STATIC",
        "metadata": {"m": "x", "flagSetId": "s"},
    }
    assert orjson.loads(b.to_json()) == {
        "key": "b",
        "variant": None,
        "reason": "DEFAULT",
        "metadata": {"flagSetId": "s"},
    }
    assert orjson.loads(c.to_json())["reason"] == "DISABLED"
    assert "value" not in orjson.loads(c.to_json())
    body = orjson.loads(d.to_json())
    assert body["errorCode"] == "PARSE_ERROR"
    assert set(body) == {"key", "errorCode", "errorDetails", "metadata"}
    bulk = orjson.loads(ofrep_bulk_body([a, b, c, d], flags.metadata))
    assert [f["key"] for f in bulk["flags"]] == ["a", "b", "c", "d"]
    assert bulk["metadata"] == {"flagSetId": "s"}
    assert orjson.loads(ofrep_bulk_body([])) == {"flags": [], "metadata": {}}


def test_evaluate_all_follows_the_set_order() -> None:
    flags = compile_flag_set({"flags": {"z": flag(), "a": flag({"var": "v"})}})
    assert flags.keys == ("z", "a")
    assert len(flags) == 2
    assert "a" in flags
    assert "q" not in flags
    assert [r.value for r in flags.evaluate_all({"v": "on"})] == [False, True]


@pytest.mark.parametrize("doc", [None, [], {"flags": []}, {"noflags": {}}])
def test_compile_refuses_a_document_without_flags(doc: Any) -> None:
    with pytest.raises(FlagSetError):
        compile_flag_set(doc)


def test_resolution_equality_and_repr() -> None:
    a = Resolution("k", 1, "one", Reason.STATIC)
    assert a == Resolution("k", 1, "one", Reason.STATIC)
    assert a != Resolution("k", 1.0, "one", Reason.STATIC)  # an int is not a float
    assert a != "k"
    assert "value=1" in repr(a)


def test_too_deep_targeting_is_a_parse_error_not_a_crash() -> None:
    deep: Any = "on"
    for _ in range(50_000):
        deep = {"!": [deep]}
    r = evaluate(flag(deep))
    assert (r.reason, r.error_code) == (Reason.ERROR, ErrorCode.PARSE_ERROR)


def test_a_pathological_context_is_a_general_error_not_a_crash() -> None:
    nested: Any = "x"
    for _ in range(50_000):
        nested = [nested]
    r = evaluate(flag({"if": [{"==": [{"cat": [{"var": "v"}]}, "x"]}, "on", "off"]}), {"v": nested})
    assert (r.reason, r.error_code) == (Reason.ERROR, ErrorCode.GENERAL)


@pytest.mark.parametrize("key", [None, 3, ["f"], {"f": 1}])
def test_odd_keys_are_not_found(key: Any) -> None:
    r = one(flag()).evaluate(key, {})
    assert r.error_code == ErrorCode.FLAG_NOT_FOUND
