"""``fractional``: flagd's deterministic percentage split (the "v2" bucketing).

The bucketing value is a string: the first argument when it is an expression (it must
evaluate to a string), otherwise ``flagKey + targetingKey``. Its MurmurHash3 x86 32-bit
hash (seed 0, UTF-8 bytes, unsigned) picks bucket ``(hash * totalWeight) >> 32``; the
buckets ``[variant, weight]`` cover ``[0, totalWeight)`` in order. A weight left out is 1,
a negative weight counts as 0. No bucketing value, a non-integer weight, a total of 0 or
above 2**31-1 make the operation null (the flag falls back to its default variant).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Sequence
from typing import Any, Final

import mmh3

from crivline.flags.ops import MAX_WEIGHT_SUM

_hash: Final = mmh3.hash

# A selector maps the evaluation data to the index of the chosen bucket, or -1 for null.
Selector = Callable[[Any], int]
KeyFn = Callable[[Any], str | None]


def bucket_hash(key: str) -> int:
    """MurmurHash3 x86 32-bit, seed 0, of the UTF-8 bytes of ``key``, unsigned."""
    return int(_hash(key, 0, signed=False))


def bucket_value(key: str, total_weight: int) -> int:
    """The point in ``[0, total_weight)`` that ``key`` falls on."""
    return (bucket_hash(key) * total_weight) >> 32


def pick(key: str, weights: Sequence[int]) -> int:
    """The index of the bucket ``key`` falls in, or -1 when the weights allow none."""
    cumulative: list[int] = []
    total = 0
    for w in weights:
        total += max(0, w)
        cumulative.append(total)
    if total <= 0 or total > MAX_WEIGHT_SUM:
        return -1
    return bisect_right(cumulative, bucket_value(key, total))


def static_selector(key_fn: KeyFn, weights: Sequence[int]) -> Selector | int:
    """A selector for weights known at compile time; -1 when they can never pick."""
    cumulative: list[int] = []
    total = 0
    for w in weights:
        total += max(0, w)
        cumulative.append(total)
    if total <= 0 or total > MAX_WEIGHT_SUM:
        return -1
    bounds = tuple(cumulative)
    hash_ = _hash

    def select(data: Any) -> int:
        key = key_fn(data)
        if key is None:
            return -1
        return bisect_right(bounds, (hash_(key, 0, signed=False) * total) >> 32)

    return select


def dynamic_selector(key_fn: KeyFn, weight_fns: Sequence[Callable[[Any], Any]]) -> Selector:
    """A selector whose weights are expressions, evaluated on every call."""
    fns = tuple(weight_fns)

    def select(data: Any) -> int:
        key = key_fn(data)
        if key is None:
            return -1
        weights: list[int] = []
        for fn in fns:
            w = fn(data)
            if type(w) is not int:
                return -1
            weights.append(w)
        return pick(key, weights)

    return select
