"""fractional: MurmurHash3 vectors, flagd v2 bucketing, weights, and the properties a
percentage rollout needs (uniform, stable as the percentage grows)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crivline.flags import Reason, compile_flag_set
from crivline.flags.fractional import bucket_hash, bucket_value, pick

# Published MurmurHash3 x86 32-bit vectors (seed 0).
MURMUR3_VECTORS = [
    ("", 0),
    ("hello", 0x248BFA47),
    ("The quick brown fox jumps over the lazy dog", 0x2E4FF723),
]

# flagd testbed v2 edge keys: exact preimages of the boundary hashes (and their buckets
# of 100 with a 50/50 split: lower below 50, upper from 50).
EDGE_VECTORS = [
    ("ejOoVL", 0, 0),
    ("bY9fO-", 1, 0),
    ("SI7p-", 2147483647, 49),
    ("6LvT0", 2147483648, 50),
    ("ceQdGm", 4294967295, 99),
]

# Bucketing strings of the testbed's v2 scenarios (flagKey/seed + user name, or
# flagKey + targetingKey for the shorthand), their hash, and the bucket of 4 x 25.
SCENARIO_VECTORS = [
    ("fractional-flagjack", 2682799072, 2),
    ("fractional-flagqueen", 4278517551, 3),
    ("fractional-flagten", 801845258, 0),
    ("fractional-flagnine", 1406129861, 1),
    ("fractional-flag3", 604371928, 0),
    ("shared-seedseven", 2854277753, 2),
    ("shared-seedeight", 1563615273, 1),
    ("shared-seednine", 803549583, 0),
    ("shared-seedtwo", 3695917884, 3),
]

# Computed here (UTF-8 bytes, seed 0) and cross-checked against the reference evaluator
# in tests/differential/test_fractional_oracle.py.
COMPUTED_VECTORS = [
    ("a", 1009084850, 23),
    ("user-1", 4171401059, 97),
    ("new-checkoutuser-42", 2394511712, 55),
    ("flagユーザー", 3230641970, 75),
    ("flag😀", 3538508242, 82),
    ("café façade", 288403862, 6),
]


@pytest.mark.parametrize(("key", "expected"), MURMUR3_VECTORS)
def test_murmur3_reference_vectors(key: str, expected: int) -> None:
    assert bucket_hash(key) == expected


@pytest.mark.parametrize(("key", "hash_", "bucket"), EDGE_VECTORS + COMPUTED_VECTORS)
def test_hash_and_bucket_of_100(key: str, hash_: int, bucket: int) -> None:
    assert bucket_hash(key) == hash_
    assert bucket_value(key, 100) == bucket


@pytest.mark.parametrize(("key", "hash_", "index"), SCENARIO_VECTORS)
def test_testbed_v2_vectors(key: str, hash_: int, index: int) -> None:
    assert bucket_hash(key) == hash_
    assert pick(key, [25, 25, 25, 25]) == index


SUITS = ["clubs", "diamonds", "hearts", "spades"]


def _suits_flag(bucketing: Any) -> dict[str, Any]:
    args: list[Any] = [[s, 25] for s in SUITS]
    if bucketing is not None:
        args.insert(0, bucketing)
    return {
        "state": "ENABLED",
        "variants": {s: s for s in [*SUITS, "wild"]},
        "defaultVariant": "wild",
        "targeting": {"fractional": args},
    }


def test_bucketing_expression_with_flag_key() -> None:
    flags = compile_flag_set(
        {
            "flags": {
                "fractional-flag": _suits_flag(
                    {"cat": [{"var": "$flagd.flagKey"}, {"var": "user.name"}]}
                )
            }
        }
    )
    for name, want in [("jack", "hearts"), ("queen", "spades"), ("ten", "clubs"), ("3", "clubs")]:
        r = flags.evaluate("fractional-flag", {"user": {"name": name}})
        assert (r.value, r.reason) == (want, Reason.TARGETING_MATCH), name


SHORTHAND = {
    "flags": {
        "fractional-flag-shorthand": {
            "state": "ENABLED",
            "variants": {"heads": "heads", "tails": "tails", "draw": "draw"},
            "defaultVariant": "draw",
            "targeting": {"fractional": [["heads"], ["tails", 1]]},
        }
    }
}


def test_shorthand_buckets_by_flag_key_and_targeting_key() -> None:
    flags = compile_flag_set(SHORTHAND)
    key = "fractional-flag-shorthand"
    assert flags.evaluate(key, {"targetingKey": "jon@company.com"}).value == "heads"
    assert flags.evaluate(key, {"targetingKey": "jane@company.com"}).value == "tails"


@pytest.mark.parametrize(
    "ctx", [{}, {"targetingKey": ""}, {"targetingKey": 12345}, {"targetingKey": None}]
)
def test_shorthand_without_a_usable_targeting_key_is_the_default(ctx: dict[str, Any]) -> None:
    flags = compile_flag_set(SHORTHAND)
    r = flags.evaluate("fractional-flag-shorthand", ctx)
    assert (r.value, r.reason) == ("draw", Reason.DEFAULT)


@pytest.mark.parametrize(
    ("weights", "expected"),
    [
        ([0, 0], -1),  # nothing to choose
        ([-50, 100], 1),  # a negative weight counts as 0
        ([1], 0),
        ([2**31 - 1], 0),
        ([2**31 - 1, 1], -1),  # over flagd's int32 total
        ([], -1),
    ],
)
def test_pick_weights(weights: list[int], expected: int) -> None:
    assert pick("any-user", weights) == expected


@pytest.mark.parametrize(
    ("bucket", "reason"),
    [
        ([["a", 1.5], ["b", 1]], Reason.DEFAULT),  # a weight must be an integer
        ([["a", True], ["b", 1]], Reason.DEFAULT),
        ([["a", 0], ["b", 0]], Reason.DEFAULT),
        ([["a", 2, 3]], Reason.DEFAULT),  # malformed bucket
        ([["b"]], Reason.TARGETING_MATCH),
    ],
)
def test_bad_weights_fall_back_to_default(bucket: list[Any], reason: Reason) -> None:
    doc = {
        "flags": {
            "f": {
                "state": "ENABLED",
                "variants": {"a": "A", "b": "B", "d": "D"},
                "defaultVariant": "d",
                "targeting": {"fractional": [{"var": "targetingKey"}, *bucket]},
            }
        }
    }
    r = compile_flag_set(doc).evaluate("f", {"targetingKey": "user-1"})
    assert r.reason == reason
    assert r.value == ("D" if reason == Reason.DEFAULT else "B")


def test_dynamic_weights() -> None:
    doc = {
        "flags": {
            "f": {
                "state": "ENABLED",
                "variants": {"red": "red", "blue": "blue"},
                "defaultVariant": "blue",
                "targeting": {
                    "fractional": [
                        {"var": "targetingKey"},
                        ["red", {"if": [{"==": [{"var": "tier"}, "premium"]}, 100, 0]}],
                        ["blue", 10],
                    ]
                },
            }
        }
    }
    flags = compile_flag_set(doc)
    assert flags.evaluate("f", {"targetingKey": "user1", "tier": "premium"}).value == "red"
    assert flags.evaluate("f", {"targetingKey": "user1", "tier": "basic"}).value == "blue"
    basic = flags.evaluate("f", {"targetingKey": "user1", "tier": "basic"})
    assert basic.reason == Reason.TARGETING_MATCH


def test_split_is_roughly_uniform() -> None:
    counts = [0, 0, 0, 0]
    for i in range(20_000):
        counts[pick(f"flaguser-{i}", [25, 25, 25, 25])] += 1
    for c in counts:
        assert 4_700 < c < 5_300, counts


@settings(max_examples=200, deadline=None)
@given(
    key=st.text(max_size=40),
    low=st.integers(min_value=0, max_value=100),
    high=st.integers(min_value=0, max_value=100),
)
def test_growing_a_rollout_never_drops_a_user(key: str, low: int, high: int) -> None:
    low, high = min(low, high), max(low, high)
    on_low = pick(key, [low, 100 - low]) == 0 if low else False
    on_high = pick(key, [high, 100 - high]) == 0 if high else False
    assert not on_low or on_high
