"""Generated flags and contexts: ours and openfeature-flagd-core must agree on value,
variant, reason and error code — in both bucketing schemes: v3 against flagd-core as it
is, v2 against flagd-core with v2's encoding swapped in (see flagd_oracle).

The generators stay inside the operations both evaluators support (flagd-core has no
``regex_match``) and inside the semantics they share. Where they knowingly differ,
Crivline follows JSONLogic's JavaScript reference and the generators avoid the corner
(see docs/flag-format.md, "Semantics"):

- ``null == 0``: JavaScript (and Crivline) say false, flagd-core's json-logic says true;
  numeric equality is only generated on context keys that are always present.
- ordering a string against null or a boolean: JavaScript converts both to numbers,
  flagd-core compares strings; ``<``/``>`` are generated on numbers only.
- ``""`` as a number: JavaScript says 0, flagd-core NaN; no empty strings meet numbers.
- ``cat``/variant names of floats: JavaScript prints ``3``, flagd-core ``3.0``; floats
  never become strings.
- ``%`` of a negative number, division by zero, ``===`` on arrays: not generated.
"""

from __future__ import annotations

from typing import Any

from flagd_oracle import Oracle, fractional_v2, outcome
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crivline.flags import compile_flag_set

NAMES = ["on", "off", "pro", "true", "false", "1"]
EMAILS = ["a@example.com", "b@crivline.dev", "ballmer@macrosoft.com", "x@y.org", "ab"]
PLANS = ["free", "pro", "team", "enterprise"]
VERSIONS = [
    "1.0.0",
    "2.0.0",
    "2.0.0-alpha",
    "2.0.0-alpha.1",
    "2.0.0-rc.1+build",
    "v2.1.0",
    "V3.0.1",
    "3.1",
    "3",
    "1.0.0.0",
    "01.0.0",
    "1.0.0-01",
    "nope",
    "",
    1,
    2,
    1.2,
    3.0,
]
TAGS = ["beta", "staff", "eu"]
KEYS = ["user-1", "user-2", "jon@company.com", "jane@company.com", "", "ユーザー"]

# -- contexts ----------------------------------------------------------------------------


def _maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.just(_ABSENT), st.none(), strategy)


_ABSENT = object()


@st.composite
def contexts(draw: st.DrawFn) -> dict[str, Any]:
    ctx: dict[str, Any] = {
        "age": draw(st.integers(min_value=0, max_value=100)),  # numbers: always present
        "score": draw(st.sampled_from([0, 0.5, 2.5, 7, 99.9])),
    }
    optional = {
        "targetingKey": st.sampled_from(KEYS),
        "email": st.sampled_from(EMAILS),
        "plan": st.sampled_from(PLANS + NAMES),
        "version": st.sampled_from(VERSIONS),
        "tags": st.lists(st.sampled_from(TAGS), max_size=3),
        "user": st.fixed_dictionaries(
            {"id": st.sampled_from(KEYS), "tier": st.sampled_from(PLANS)}
        ),
    }
    for key, strategy in optional.items():
        value = draw(_maybe(strategy))
        if value is not _ABSENT and not (key == "targetingKey" and value is None):
            ctx[key] = value
    return ctx


# -- rules -------------------------------------------------------------------------------

str_var = st.sampled_from(["email", "plan", "targetingKey", "user.id", "user.tier"]).map(
    lambda p: {"var": p}
)
num_var = st.sampled_from(["age", "score"]).map(lambda p: {"var": p})
str_lit = st.sampled_from(EMAILS + PLANS + KEYS[:3] + ["@example.com", "b@", "pro"])
num_lit = st.integers(min_value=-5, max_value=105) | st.sampled_from([0.5, 2.5, 99.9])
positive = st.integers(min_value=1, max_value=9)
seg_names = st.sampled_from(["seg_a", "seg_b"])


def _op(name: str, *args: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.tuples(*args).map(lambda values: {name: list(values)})


numbers = st.one_of(
    num_var,
    num_lit,
    _op("+", num_var, num_lit),
    _op("-", num_var, num_lit),
    _op("*", num_var, positive),
    _op("/", num_var, positive),
    _op("%", num_var, positive),
    _op("max", num_var, num_lit, num_lit),
    _op("min", num_var, num_lit),
)
strings = st.one_of(
    str_var,
    _op("cat", str_var, str_lit),
    _op("substr", str_var, st.integers(-4, 4), st.integers(-3, 5)),
    _op("substr", str_var, st.integers(-4, 4)),
)
base_conditions = st.one_of(
    st.tuples(st.sampled_from(["==", "!=", "===", "!=="]), strings, str_lit).map(
        lambda t: {t[0]: [t[1], t[2]]}
    ),
    st.tuples(st.sampled_from(["==", "!=", "<", "<=", ">", ">="]), numbers, num_lit).map(
        lambda t: {t[0]: [t[1], t[2]]}
    ),
    _op("<", num_lit, num_var, num_lit),
    _op("<=", num_lit, num_var, num_lit),
    _op("in", str_var, st.lists(str_lit, max_size=4)),
    _op("in", str_lit, str_var),
    _op("in", str_var, _op("merge", st.lists(str_lit, max_size=2), st.lists(str_lit, max_size=2))),
    _op("starts_with", str_var, str_lit),
    _op("ends_with", str_var, str_lit),
    _op(
        "sem_ver",
        st.just({"var": "version"}),
        st.sampled_from(["=", "!=", "<", "<=", ">", ">=", "^", "~"]),
        st.sampled_from(["1.0.0", "2.0.0", "2.0.0-alpha.1", "v3.0.0", "2", "2.1"]),
    ),
    st.lists(st.sampled_from(["email", "plan", "user.id", "tags"]), min_size=1, max_size=3).map(
        lambda keys: {"missing": keys}
    ),
    st.tuples(
        st.integers(0, 3), st.lists(st.sampled_from(["email", "plan", "tags"]), max_size=3)
    ).map(lambda t: {"missing_some": [t[0], t[1]]}),
    st.tuples(st.sampled_from(["some", "all", "none"]), st.sampled_from(TAGS)).map(
        lambda t: {t[0]: [{"var": "tags"}, {"==": [{"var": ""}, t[1]]}]}
    ),
    _op("!!", str_var),
    seg_names.map(lambda name: {"$ref": name}),
    st.booleans(),
)
conditions = st.recursive(
    base_conditions,
    lambda inner: st.one_of(
        _op("!", inner),
        st.lists(inner, min_size=1, max_size=3).map(lambda xs: {"and": xs}),
        st.lists(inner, min_size=1, max_size=3).map(lambda xs: {"or": xs}),
        st.lists(
            st.sampled_from([[False, 0], [True, 1], [False, 2], [True, 0]]), min_size=1, max_size=3
        ).map(lambda buckets: {"fractional": buckets}),
    ),
    max_leaves=6,
)

variant_literals = st.sampled_from([*NAMES, *NAMES, "gone", None, True, False])
buckets = st.lists(
    st.one_of(
        st.tuples(variant_literals, st.integers(min_value=-3, max_value=50)).map(list),
        variant_literals.map(lambda v: [v]),
    ),
    min_size=1,
    max_size=4,
)
bucketing = st.sampled_from(
    [
        None,
        {"var": "targetingKey"},
        {"var": "email"},
        {"cat": [{"var": "$flagd.flagKey"}, {"var": "user.id"}]},
        {"cat": ["seed", {"var": "email"}]},
        {"var": "age"},  # not strings: v3 buckets them, v2 gives null
        {"var": "score"},
        {"var": "user"},
    ]
)
fractionals = st.tuples(bucketing, buckets).map(
    lambda t: {"fractional": t[1] if t[0] is None else [t[0], *t[1]]}
)
tails = st.recursive(
    st.one_of(variant_literals, fractionals, st.just({"var": "plan"})),
    lambda inner: st.one_of(
        _op("if", conditions, inner, inner),
        _op("if", conditions, inner),
        _op("if", conditions, inner, conditions, inner, inner),
        _op("?:", conditions, inner, inner),
    ),
    max_leaves=5,
)

value_kinds = {
    "string": lambda name: name.upper(),
    "integer": lambda name: len(name),
    "float": lambda name: len(name) + 0.5,
    "boolean": lambda name: len(name) % 2 == 0,
    "object": lambda name: {"name": name, "n": [1, 2]},
}


@st.composite
def flags(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(st.lists(st.sampled_from(NAMES), min_size=2, max_size=6, unique=True))
    make = value_kinds[draw(st.sampled_from(sorted(value_kinds)))]
    flag: dict[str, Any] = {
        "state": draw(st.sampled_from(["ENABLED"] * 9 + ["DISABLED"])),
        "variants": {n: make(n) for n in names},
    }
    default = draw(st.sampled_from([*names, None, "absent", "gone"]))
    if default != "absent":
        flag["defaultVariant"] = default
    shape = draw(st.sampled_from(["none", "empty", "rule", "rule", "rule", "rule"]))
    if shape == "empty":
        flag["targeting"] = {}
    elif shape == "rule":
        flag["targeting"] = draw(tails)
    if draw(st.booleans()):
        flag["metadata"] = {"team": "growth", "rank": 2}
    return flag


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "flags": {f"flag-{i}": draw(flags()) for i in range(draw(st.integers(1, 4)))},
        "$evaluators": {
            "seg_a": draw(base_conditions.filter(_no_ref)),
            "seg_b": draw(conditions.filter(_no_ref)),
        },
    }
    if draw(st.booleans()):
        doc["metadata"] = {"flagSetId": "p/e", "team": "platform"}
    return doc


def _no_ref(rule: Any) -> bool:
    return "$ref" not in repr(rule)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents(), st.lists(contexts(), min_size=1, max_size=4))
def test_ours_agrees_with_flagd_core_v3(doc: dict[str, Any], ctxs: list[dict[str, Any]]) -> None:
    ours = compile_flag_set(doc, bucketing="v3")
    oracle = Oracle(doc)
    for ctx in ctxs:
        for key in doc["flags"]:
            assert outcome(ours.evaluate(key, ctx)) == oracle.evaluate(key, ctx), (key, ctx)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents(), st.lists(contexts(), min_size=1, max_size=4))
def test_ours_agrees_with_flagd_core_v2(doc: dict[str, Any], ctxs: list[dict[str, Any]]) -> None:
    ours = compile_flag_set(doc, bucketing="v2")
    with fractional_v2():
        oracle = Oracle(doc)
        for ctx in ctxs:
            for key in doc["flags"]:
                expected = oracle.evaluate(key, ctx)
                assert outcome(ours.evaluate(key, ctx)) == expected, (key, ctx)
