"""Hash vectors cross-checked against openfeature-flagd-core's fractional."""

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
    """Why the oracle is patched: flagd-core 2.0 hashes CBOR, so buckets differ."""
    doc = hundred_buckets({"var": "k"})
    oracle = Oracle(doc)
    ours = compile_flag_set(doc)
    differ = [
        k
        for k in KEYS
        if outcome(ours.evaluate("flag", {"k": k})) != oracle.evaluate("flag", {"k": k})
    ]
    assert len(differ) > len(KEYS) // 2


@settings(max_examples=150, deadline=None)
@given(
    key=st.text(max_size=30),
    weights=st.lists(st.integers(min_value=-3, max_value=40), min_size=1, max_size=6),
)
def test_any_key_and_weights_match_the_oracle(key: str, weights: list[int]) -> None:
    buckets = [[f"v{i}", w] for i, w in enumerate(weights)]
    doc = {
        "flags": {
            "flag": {
                "state": "ENABLED",
                "variants": {f"v{i}": f"V{i}" for i in range(len(weights))} | {"d": "D"},
                "defaultVariant": "d",
                "targeting": {"fractional": [{"var": "k"}, *buckets]},
            }
        }
    }
    ours = compile_flag_set(doc).evaluate("flag", {"k": key})
    with fractional_v2():
        theirs = Oracle(doc).evaluate("flag", {"k": key})
    assert outcome(ours) == theirs
