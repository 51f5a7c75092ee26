"""Hash vectors cross-checked against openfeature-flagd-core's fractional: v2 with the
oracle's encoding swapped for v2's, v3 against the oracle as it is."""

from __future__ import annotations

from typing import Any

import pytest
from flagd_oracle import Oracle, fractional_v2, outcome
from hypothesis import given, settings
from hypothesis import strategies as st

from crivline.flags import compile_flag_set
from crivline.flags.fractional import bucket_value

# Bucketing strings: the testbed's v2 edge keys and scenario keys, and ones computed
# here (see tests/unit/flags/test_fractional.py for their hashes).
KEYS = [
    "ejOoVL",
    "bY9fO-",
    "SI7p-",
    "6LvT0",
    "ceQdGm",
    "fractional-flagjack",
    "fractional-flag3",
    "shared-seedseven",
    "a",
    "user-1",
    "new-checkoutuser-42",
    "flagユーザー",
    "flag😀",
    "café façade",
]


def hundred_buckets(bucketing: Any) -> dict[str, Any]:
    """A flag whose variant is the bucket in [0, 100) that the key falls in."""
    buckets: list[Any] = [[f"b{i}", 1] for i in range(100)]
    args = buckets if bucketing is None else [bucketing, *buckets]
    return {
        "flags": {
            "flag": {
                "state": "ENABLED",
                "variants": {f"b{i}": i for i in range(100)},
                "defaultVariant": "b0",
                "targeting": {"fractional": args},
            }
        }
    }


def weighted(weights: list[int]) -> dict[str, Any]:
    buckets = [[f"v{i}", w] for i, w in enumerate(weights)]
    return {
        "flags": {
            "flag": {
                "state": "ENABLED",
                "variants": {f"v{i}": f"V{i}" for i in range(len(weights))} | {"d": "D"},
                "defaultVariant": "d",
                "targeting": {"fractional": [{"var": "k"}, *buckets]},
            }
        }
    }


@pytest.mark.parametrize("key", KEYS)
def test_bucket_of_100_matches_the_oracle(key: str) -> None:
    doc = hundred_buckets({"var": "k"})
    ours = compile_flag_set(doc).evaluate("flag", {"k": key})
    with fractional_v2():
        theirs = Oracle(doc).evaluate("flag", {"k": key})
    assert ours.value == bucket_value(key, 100)
    assert outcome(ours) == theirs


def test_shorthand_matches_the_oracle() -> None:
    doc = hundred_buckets(None)
    ours = compile_flag_set(doc)
    with fractional_v2():
        oracle = Oracle(doc)
        for user in ["user-1", "jon@company.com", "ユーザー", ""]:
            ctx = {"targetingKey": user}
            assert outcome(ours.evaluate("flag", ctx)) == oracle.evaluate("flag", ctx), user
        assert outcome(ours.evaluate("flag", {})) == oracle.evaluate("flag", {})


def test_the_unpatched_oracle_is_fractional_v3() -> None:
    """The schemes really differ: v2 disagrees with flagd-core on most keys, v3 on none."""
    doc = hundred_buckets({"var": "k"})
    oracle = Oracle(doc)
    v2 = compile_flag_set(doc, bucketing="v2")
    v3 = compile_flag_set(doc, bucketing="v3")
    differ = [
        k
        for k in KEYS
        if outcome(v2.evaluate("flag", {"k": k})) != oracle.evaluate("flag", {"k": k})
    ]
    assert len(differ) > len(KEYS) // 2
    for k in KEYS:
        assert outcome(v3.evaluate("flag", {"k": k})) == oracle.evaluate("flag", {"k": k}), k


def test_v3_shorthand_matches_the_unpatched_oracle() -> None:
    doc = hundred_buckets(None)
    ours = compile_flag_set(doc, bucketing="v3")
    oracle = Oracle(doc)
    for ctx in [{"targetingKey": u} for u in ["user-1", "jon@company.com", "ユーザー", ""]] + [{}]:
        assert outcome(ours.evaluate("flag", ctx)) == oracle.evaluate("flag", ctx), ctx


# JSON values a context can carry as a bucketing value. Not an array at the top: there
# flagd-core takes the evaluated value for a bucket (the shorthand), which is its quirk.
json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_leaves,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
).filter(lambda v: type(v) is not list)


@settings(max_examples=300, deadline=None)
@given(value=json_values)
def test_v3_any_json_bucketing_value_matches_the_unpatched_oracle(value: Any) -> None:
    doc = hundred_buckets({"var": "k"})
    ours = compile_flag_set(doc, bucketing="v3").evaluate("flag", {"k": value})
    assert outcome(ours) == Oracle(doc).evaluate("flag", {"k": value})


@settings(max_examples=150, deadline=None)
@given(
    key=st.text(max_size=30),
    weights=st.lists(st.integers(min_value=-3, max_value=40), min_size=1, max_size=6),
)
def test_v3_any_key_and_weights_match_the_unpatched_oracle(key: str, weights: list[int]) -> None:
    doc = weighted(weights)
    ours = compile_flag_set(doc, bucketing="v3").evaluate("flag", {"k": key})
    assert outcome(ours) == Oracle(doc).evaluate("flag", {"k": key})


@settings(max_examples=150, deadline=None)
@given(
    key=st.text(max_size=30),
    weights=st.lists(st.integers(min_value=-3, max_value=40), min_size=1, max_size=6),
)
def test_any_key_and_weights_match_the_oracle(key: str, weights: list[int]) -> None:
    doc = weighted(weights)
    ours = compile_flag_set(doc).evaluate("flag", {"k": key})
    with fractional_v2():
        theirs = Oracle(doc).evaluate("flag", {"k": key})
    assert outcome(ours) == theirs
