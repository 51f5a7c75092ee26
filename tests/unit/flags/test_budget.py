"""Bounded evaluation: numbers as doubles, the work budget, the compiled-size bound.

Every attack here is checked two ways: the answer (a GENERAL error saying which budget,
or PARSE_ERROR / a validation problem with the path) and the work the meter counted,
which must stay within the budget — never a wall-clock bound.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from flagkit import flag
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.benchset import ltflags

from crivline.flags import (
    DEFAULT_BUDGET,
    Budget,
    ErrorCode,
    FlagSetError,
    Limits,
    Reason,
    compile_flag_set,
    compiled_size_problem,
    validate_flag_set,
)
from crivline.flags.budget import METER

UNSET = 1 << 62
LOADTESTS = Path(__file__).resolve().parents[3] / "loadtests"


def evaluate(definition: dict[str, Any], context: dict[str, Any], **kw: Any) -> Any:
    doc = {"flags": {"f": definition}, "$evaluators": kw.pop("segments", {})}
    return compile_flag_set(doc, **kw).evaluate("f", context)


def spent(definition: dict[str, Any], context: dict[str, Any]) -> tuple[int, Any]:
    """(work units, result) of one evaluation, as the meter counted them."""
    flags = compile_flag_set({"flags": {"f": definition}})
    METER.work = UNSET
    result = flags.evaluate("f", context)
    if METER.work == UNSET:  # targeting folded to a constant: nothing runs
        return 0, result
    return DEFAULT_BUDGET.work - METER.work, result


def over_budget(result: Any) -> bool:
    return (
        result.reason is Reason.ERROR
        and result.error_code is ErrorCode.GENERAL
        and f"exceeded the evaluation budget of {DEFAULT_BUDGET.work} work units"
        in (result.error_message or "")
    )


# -- numbers ---------------------------------------------------------------------------


def test_repeated_squaring_reaches_infinity_instead_of_a_huge_integer() -> None:
    # the attack of the issue: 3 squared 23 times is a 5.5-million-digit integer
    square = {"*": [{"var": "accumulator"}, {"var": "accumulator"}]}
    rule = {"if": [{"==": [{"reduce": [{"var": "a"}, square, 3]}, 1]}, "on", "off"]}
    work, result = spent(flag(rule), {"a": list(range(23))})
    assert result.value is False
    assert result.reason is Reason.TARGETING_MATCH
    assert work < 200
    big = {"if": [{">": [{"reduce": [{"var": "a"}, square, 3]}, 1e308]}, "on", "off"]}
    assert evaluate(flag(big), {"a": list(range(23))}).value is True  # Infinity > 1e308


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ({"*": [2**53, 2]}, 2.0**54),  # past 2**53: a double
        ({"+": [2**53, 1]}, 2.0**53),  # rounded as a double rounds it
        ({"-": [-(2**53), 1]}, -(2.0**53)),
        ({"*": [3, 4]}, 12),  # small integers stay integers
        ({"+": ["0x1F", 1]}, 32),
        ({"*": ["0x" + "f" * 400, 2]}, float("inf")),  # beyond the double range
    ],
)
def test_arithmetic_is_on_doubles(rule: dict[str, Any], expected: Any) -> None:
    flags = compile_flag_set({"flags": {"f": flag({"var": "x"})}})
    assert flags is not None
    from crivline.flags.compile import ExprCompiler

    value = ExprCompiler("f", {}).compile(rule, top=True).const
    assert value == expected
    assert type(value) is type(expected)


def test_integer_flag_values_keep_their_type() -> None:
    definition = {
        "state": "ENABLED",
        "variants": {"small": 1, "big": 9_007_199_254_740_993},
        "defaultVariant": "small",
        "targeting": {"if": [{">": [{"var": "n"}, 10]}, "big", "small"]},
    }
    result = evaluate(definition, {"n": 11})
    assert result.value == 9_007_199_254_740_993
    assert type(result.value) is int
    assert type(evaluate(definition, {"n": 1}).value) is int


# -- the evaluation budget ---------------------------------------------------------------


def test_the_bench_flag_set_runs_far_below_the_budget() -> None:
    compiled = compile_flag_set(ltflags.flag_set())
    most = 0
    for n in range(300):
        for key in compiled.keys:
            METER.work = UNSET
            result = compiled.evaluate(key, ltflags.context(n))
            assert result.error_code is None, result
            if METER.work != UNSET:
                most = max(most, DEFAULT_BUDGET.work - METER.work)
    assert most < DEFAULT_BUDGET.work // 100, most


GROWING = {
    "merge doubles an array": {"merge": [{"var": "accumulator"}, {"var": "accumulator"}]},
    "cat doubles a string": {"cat": [{"var": "accumulator"}, {"var": "accumulator"}]},
    "an array of arrays": {"merge": [[{"var": "accumulator"}], [{"var": "accumulator"}]]},
}


@pytest.mark.parametrize("name", GROWING)
def test_data_that_grows_inside_reduce_runs_out_of_budget(name: str) -> None:
    body = GROWING[name]
    rule = {"if": [{"cat": [{"reduce": [{"var": "a"}, body, ["xx"]]}]}, "on", "off"]}
    work, result = spent(flag(rule), {"a": list(range(60))})
    assert over_budget(result), result
    assert work <= DEFAULT_BUDGET.work + 1_000_000


def test_nested_array_operations_are_charged_per_item() -> None:
    inner = {"some": [{"var": ""}, {"==": [{"var": ""}, -1]}]}
    rule = {"if": [{"none": [{"map": [{"var": "a"}, {"var": "b"}]}, inner]}, "on", "off"]}
    context = {"a": [{"b": list(range(1000))}] * 200}
    work, result = spent(flag(rule), context)
    assert over_budget(result), result
    small = {"a": [{"b": list(range(10))}] * 10}
    work, result = spent(flag(rule), small)
    assert result.value is True
    assert 100 < work < 1_000


def test_an_array_compared_as_a_string_is_charged_as_bytes_built() -> None:
    # == against a string turns the array into one; doing that per item of a long array
    # of long arrays builds gigabytes unless it is charged
    rule = {"if": [{"some": [{"var": "rows"}, {"==": [{"var": ""}, "x"]}]}, "on", "off"]}
    row = ["y" * 100] * 1000
    _, result = spent(flag(rule), {"rows": [row] * 1000})
    assert over_budget(result), result


def test_in_over_a_long_string_and_substr_are_charged() -> None:
    scan = {"all": [{"var": "a"}, {"in": ["h", {"var": "text"}]}]}
    text = "h" * 200_000
    _, result = spent(flag({"if": [scan, "on", "off"]}), {"a": [{"text": text}] * 200})
    assert over_budget(result), result
    cut = {"map": [{"var": "a"}, {"substr": [{"var": "text"}, 1]}]}
    _, result = spent(flag({"if": [{"!!": [cut]}, "on", "off"]}), {"a": [{"text": text}] * 20})
    assert over_budget(result), result


def test_a_budget_error_is_per_evaluation() -> None:
    body = {"merge": [{"var": "accumulator"}, {"var": "accumulator"}]}
    rule = {"if": [{"reduce": [{"var": "a"}, body, [1]]}, "on", "off"]}
    flags = compile_flag_set({"flags": {"f": flag(rule)}})
    assert flags.evaluate("f", {"a": list(range(40))}).error_code is ErrorCode.GENERAL
    assert flags.evaluate("f", {"a": list(range(3))}).value is True  # a fresh budget


def test_evaluations_out_of_budget_are_counted() -> None:
    before = METER.exceeded
    body = {"merge": [{"var": "accumulator"}, {"var": "accumulator"}]}
    evaluate(flag({"if": [{"reduce": [{"var": "a"}, body, [1]]}, "on", "off"]}), {"a": [0] * 40})
    assert METER.exceeded == before + 1


def test_a_bulk_request_has_a_budget_of_its_own() -> None:
    # each flag is within its budget, together they are not
    body = {"some": [{"var": "a"}, {"==": [{"var": ""}, -1]}]}
    flags = {f"f{i}": flag({"if": [body, "on", "off"]}) for i in range(30)}
    budget = Budget(work=20_000, request_work=100_000)
    compiled = compile_flag_set({"flags": flags}, budget=budget)
    context = {"a": list(range(2_500))}
    assert compiled.evaluate("f0", context).value is False
    results = compiled.evaluate_all(context)
    fine = [r for r in results if r.error_code is None]
    refused = [r for r in results if r.error_code is ErrorCode.GENERAL]
    assert 5 <= len(fine) <= 12, len(fine)
    assert len(fine) + len(refused) == 30
    assert "budget per request" in (refused[0].error_message or "")
    # the pool is per request: the next one starts afresh, single evaluations never see it
    assert compiled.evaluate_all(context)[0].error_code is None
    assert compiled.evaluate("f29", context).value is False


# -- the compiled-size bound -------------------------------------------------------------

LIMITS = Limits()
BIG = "x" * 100_000


def _in_cat(refs: int) -> dict[str, Any]:
    cat = {"cat": [{"$ref": "big"} for _ in range(refs)]}
    return {"if": [{"in": [{"var": "a"}, cat]}, "on", "off"]}


def test_folding_a_segment_used_many_times_is_refused_at_the_edge() -> None:
    result = evaluate(flag(_in_cat(1000)), {}, segments={"big": {"cat": [BIG]}})
    assert result.error_code is ErrorCode.PARSE_ERROR
    assert "targeting.if[0].in[1].cat[" in (result.error_message or "")
    assert f"more than {LIMITS.max_compiled_bytes} bytes" in (result.error_message or "")
    ok = evaluate(flag(_in_cat(3)), {"a": "xx"}, segments={"big": {"cat": [BIG]}})
    assert ok.value is True


def test_validation_refuses_what_the_edge_would_refuse_with_the_path() -> None:
    doc = {"flags": {"f": flag(_in_cat(1000))}, "$evaluators": {"big": {"cat": [BIG]}}}
    with pytest.raises(FlagSetError) as caught:
        validate_flag_set(doc)
    [problem] = caught.value.problems
    assert problem.path.startswith("flags.f.targeting.if[0].in[1].cat[")
    assert problem.path.endswith("].$ref")
    assert "inside segment 'big'" in problem.message


def test_a_deep_ref_chain_is_measured_at_every_use() -> None:
    # each segment uses the previous one twice: 2**20 uses of the first one
    segments: dict[str, Any] = {"s0": {"in": [{"var": "x"}, ["a" * 100]]}}
    for i in range(1, 21):
        segments[f"s{i}"] = {"or": [{"$ref": f"s{i - 1}"}, {"$ref": f"s{i - 1}"}]}
    problem = compiled_size_problem("f", {"$ref": "s20"}, segments)
    assert problem is not None
    assert "more than" in problem.message
    assert evaluate(flag({"$ref": "s20"}), {}, segments=segments).error_code is (
        ErrorCode.PARSE_ERROR
    )


def test_a_huge_literal_list_counts_its_bytes() -> None:
    listed = {"in": [{"var": "a"}, ["v" * 1000] * 3000]}
    assert compiled_size_problem("f", listed, {}) is not None
    assert compiled_size_problem("f", {"in": [{"var": "a"}, ["v" * 1000] * 100]}, {}) is None


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(refs=st.integers(1, 40), size=st.integers(1, 120_000), twice=st.booleans())
def test_validation_and_the_edge_measure_the_same_way(refs: int, size: int, twice: bool) -> None:
    segment: dict[str, Any] = {"cat": ["y" * size, "y" * size] if twice else ["y" * size]}
    targeting = _in_cat(refs)
    doc = {"flags": {"f": flag(targeting)}, "$evaluators": {"big": segment}}
    try:
        validate_flag_set(doc)
        refused = False
    except FlagSetError:
        refused = True
    result = compile_flag_set(doc).evaluate("f", {"a": "y"})
    assert refused is (result.error_code is ErrorCode.PARSE_ERROR), (refused, result)


# -- a search for expensive rules ----------------------------------------------------------

_VARS = st.sampled_from([{"var": "a"}, {"var": "s"}, {"var": ""}, {"var": "accumulator"}])
_LEAVES = st.one_of(_VARS, st.integers(-5, 5), st.sampled_from(["x", "", "ab"]))


def _grow(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    pair = st.lists(children, min_size=2, max_size=3)
    scoped = st.tuples(st.sampled_from(["map", "filter", "all", "some", "none"]), children)
    return st.one_of(
        st.builds(lambda op, args: {op: args}, st.sampled_from(["merge", "cat", "+", "*"]), pair),
        st.builds(lambda op_body: {op_body[0]: [{"var": "a"}, op_body[1]]}, scoped),
        st.builds(lambda body: {"reduce": [{"var": "a"}, body, ["x"]]}, children),
        st.builds(lambda args: {"in": args}, pair),
        st.builds(lambda args: {"==": args}, pair),
    )


RULES = st.recursive(_LEAVES, _grow, max_leaves=12)
CONTEXTS = st.fixed_dictionaries(
    {
        "a": st.one_of(
            st.just(list(range(2_000))),
            st.just([["z" * 50] * 50] * 200),
            st.just(["w" * 200] * 100),
        ),
        "s": st.sampled_from(["s" * 20_000, "short"]),
    }
)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rule=RULES, context=CONTEXTS)
def test_no_rule_found_by_search_escapes_the_budget(rule: Any, context: dict[str, Any]) -> None:
    """Hypothesis looks for costly (rule, context) pairs; whatever it finds, the meter
    must stop it near the budget — the charge of one step past it at most."""
    targeting = {"if": [{"!!": [rule]}, "on", "off"]}
    work, result = spent(flag(targeting), context)
    if result.error_code is ErrorCode.PARSE_ERROR:
        return  # refused at compile time (over the compiled-size bound)
    # one charge may overshoot (a loop's whole cost is charged before it runs), but the
    # work past the budget is never done
    assert work <= DEFAULT_BUDGET.work + 5 * 10**6, (work, rule)
    if work > DEFAULT_BUDGET.work:
        assert over_budget(result), result


def test_reading_a_long_string_as_a_number_is_charged() -> None:
    # found by the search above: * on a 20,000-character string, once per item
    rule = {"some": [{"var": "a"}, {"==": [{"*": [2, {"var": "s"}]}, 1]}]}
    context = {"a": [{"s": "1" * 20_000}] * 2_000}
    work, result = spent(flag({"if": [rule, "on", "off"]}), context)
    assert over_budget(result), result
    assert work > DEFAULT_BUDGET.work
