"""Properties over generated documents: validation only ever raises FlagSetError,
evaluation never raises, and what validation accepts compiles without PARSE_ERROR."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crivline.flags import (
    ErrorCode,
    FlagSetError,
    Problem,
    Reason,
    compile_flag_set,
    validate_flag,
    validate_flag_set,
    validate_segment,
)
from crivline.flags.ops import OPERATIONS

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=12)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=25,
)

# Rules built from real operations (and a few unknown ones) over context paths and
# literals, so generated documents reach deep into validation and compilation.
paths = st.sampled_from(
    ["", "a", "b", "user.id", "tags", "tags.0", "$flagd.flagKey", "targetingKey"]
)
leaves = (
    st.builds(lambda p: {"var": p}, paths)
    | st.sampled_from(["on", "off", "a", "1.2.3", "x@y.z", ""])
    | st.integers(min_value=-5, max_value=100)
    | st.booleans()
    | st.none()
    | st.just({"$ref": "seg"})
)
op_names = st.sampled_from([*sorted(OPERATIONS), "nope", "$ref"])
rules = st.recursive(
    leaves,
    lambda inner: (
        st.builds(lambda op, args: {op: args}, op_names, st.lists(inner, max_size=4) | inner)
        | st.lists(inner, max_size=3)
    ),
    max_leaves=20,
)
contexts = st.dictionaries(
    st.sampled_from(["a", "b", "user", "tags", "targetingKey", "$flagd"]), json_values, max_size=5
)


def outcome(check: Callable[[], None]) -> list[Problem] | None:
    """None when ``check`` accepts; its problems when it raises FlagSetError (and any
    other exception propagates, failing the test)."""
    try:
        check()
    except FlagSetError as exc:
        return exc.problems
    return None


def flag_with(targeting: Any, variants: Any = None, default: Any = "on") -> dict[str, Any]:
    return {
        "state": "ENABLED",
        "variants": variants if variants is not None else {"on": "ON", "off": "OFF"},
        "defaultVariant": default,
        "targeting": targeting,
    }


@SETTINGS
@given(json_values)
def test_validation_of_any_json_raises_only_flag_set_errors(doc: Any) -> None:
    for check in (
        lambda: validate_flag_set(doc),
        lambda: validate_flag_set({"flags": doc}),
        lambda: validate_flag_set({"flags": {"f": doc}, "$evaluators": doc}),
        lambda: validate_flag("f", doc),
        lambda: validate_segment("s", doc),
    ):
        found = outcome(check)
        if found is not None:
            assert found
            assert all(isinstance(p.message, str) and p.message for p in found)


@SETTINGS
@given(rules, json_values, json_values)
def test_validation_of_generated_flags_raises_only_flag_set_errors(
    targeting: Any, variants: Any, default: Any
) -> None:
    doc = {
        "flags": {"f": flag_with(targeting, variants, default)},
        "$evaluators": {"seg": targeting},
    }
    found = outcome(lambda: validate_flag_set(doc))
    assert found is None or len(found) > 0


@SETTINGS
@given(rules, st.lists(contexts, min_size=1, max_size=3))
def test_evaluation_never_raises(targeting: Any, ctxs: list[dict[str, Any]]) -> None:
    doc = {
        "flags": {"f": flag_with(targeting), "g": flag_with({"if": [targeting, "on", "off"]})},
        "$evaluators": {"seg": {"!": [targeting]}},
    }
    flags = compile_flag_set(doc)
    for ctx in ctxs:
        for r in flags.evaluate_all(ctx):
            if r.error_code is not None:
                assert r.reason == Reason.ERROR
                assert r.value is None
            else:
                assert r.reason in (
                    Reason.STATIC,
                    Reason.TARGETING_MATCH,
                    Reason.DEFAULT,
                )
                assert r.value in ("ON", "OFF")
            assert r.to_json()


@SETTINGS
@given(rules, contexts)
def test_what_validation_accepts_compiles(targeting: Any, ctx: dict[str, Any]) -> None:
    doc = {
        "flags": {"f": flag_with(targeting)},
        "$evaluators": {"seg": {"==": [{"var": "a"}, 1]}},
    }
    if outcome(lambda: validate_flag_set(doc)) is not None:
        return
    r = compile_flag_set(doc).evaluate("f", ctx)
    assert r.error_code != ErrorCode.PARSE_ERROR, r
