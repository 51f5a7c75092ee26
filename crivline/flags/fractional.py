"""``fractional``: flagd's deterministic percentage split, in both of its bucketing schemes.

A flag set is bucketed by one scheme (see :data:`SCHEMES`), a property of the
environment that travels with its flag set (``metadata.fractionalBucketing``):

- **v2** (flagd before 0.12, Crivline's first scheme): the bucketing value must be a
  string — the first argument when it is an expression, otherwise ``flagKey +
  targetingKey`` — and the hash is taken over its UTF-8 bytes.
- **v3** (flagd's current scheme, openfeature-flagd-core 2.x): the bucketing value is any
  JSON value but null, and the hash is taken over its deterministic CBOR encoding
  (RFC 8949: map keys sorted, floats in their shortest exact width, and floats without
  a fraction that fit 64 bits encoded as integers, so ``1.0`` and ``1`` bucket alike).
  The shorthand's value is the array ``[flagKey, targetingKey]``.

Both then take MurmurHash3 x86 32-bit (seed 0, unsigned) and pick bucket ``(hash *
totalWeight) >> 32``; the buckets ``[variant, weight]`` cover ``[0, totalWeight)`` in
order. A weight left out is 1, a negative weight counts as 0. No bucketing value, a
non-integer weight, a total of 0 or above 2**31-1 make the operation null (the flag
falls back to its default variant).
"""

from __future__ import annotations

import struct
from bisect import bisect_right
from collections.abc import Callable, Sequence
from typing import Any, Final, Literal

import cbor2
import mmh3

from crivline.flags.ops import MAX_WEIGHT_SUM

Scheme = Literal["v2", "v3"]
SCHEMES: Final[tuple[Scheme, ...]] = ("v2", "v3")
LEGACY_SCHEME: Final[Scheme] = "v2"  # what a flag set that names no scheme is bucketed by
CURRENT_SCHEME: Final[Scheme] = "v3"  # what a new environment gets

_hash: Final = mmh3.hash

# A selector maps the evaluation data to the index of the chosen bucket, or -1 for null.
Selector = Callable[[Any], int]
# What is hashed: a str (v2, UTF-8) or the CBOR bytes (v3); None when there is nothing.
KeyFn = Callable[[Any], str | bytes | None]


def scheme_of(metadata: Any) -> Scheme:
    """The scheme a flag set's metadata names; v2 when it names none (flag sets served
    before the scheme was recorded were all v2)."""
    if isinstance(metadata, dict):
        named = metadata.get("fractionalBucketing")
        if named in SCHEMES:
            return named  # type: ignore[no-any-return]
    return LEGACY_SCHEME


# -- v3: the deterministic CBOR encoding ---------------------------------------------------

_INT64_MIN: Final = -(2**63)
_UINT64_MAX: Final = 2**64 - 1


def _text_head(size: int) -> bytes:
    """The head of a CBOR text string (major type 3) of ``size`` bytes."""
    if size < 24:
        return bytes((0x60 | size,))
    if size < 0x100:
        return bytes((0x78, size))
    if size < 0x10000:
        return b"\x79" + struct.pack(">H", size)
    if size < 0x100000000:
        return b"\x7a" + struct.pack(">I", size)
    return b"\x7b" + struct.pack(">Q", size)


def cbor_text(text: str) -> bytes | None:
    """The CBOR encoding of a string, or None when it is not valid Unicode text (a lone
    surrogate). Strings are nearly every bucketing value, so they skip the library."""
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return _text_head(len(data)) + data


def _integral(value: Any) -> Any:
    """``value`` with every float that has no fraction and fits 64 bits as an int."""
    t = type(value)
    if t is float:
        if value.is_integer() and _INT64_MIN <= value <= _UINT64_MAX:
            return int(value)
        return value
    if t is dict:
        return {k: _integral(v) for k, v in value.items()}
    if t is list:
        return [_integral(v) for v in value]
    return value


def cbor_value(value: Any) -> bytes | None:
    """The v3 bucketing bytes of a JSON value; None for null or what CBOR cannot carry."""
    if value is None:
        return None
    if type(value) is str:
        return cbor_text(value)
    try:
        return cbor2.dumps(_integral(value), canonical=True)
    except (ValueError, TypeError, UnicodeEncodeError, cbor2.CBOREncodeError, RecursionError):
        return None


def shorthand_prefix(flag_key: str) -> bytes | None:
    """The v3 shorthand's bytes before the targeting key: a 2-array head, the flag key."""
    key = cbor_text(flag_key)
    return None if key is None else b"\x82" + key


# -- buckets -------------------------------------------------------------------------------


def bucket_hash(key: str | bytes) -> int:
    """MurmurHash3 x86 32-bit, seed 0, of ``key`` (a str as UTF-8), unsigned."""
    return int(_hash(key, 0, signed=False))


def bucket_value(key: str | bytes, total_weight: int) -> int:
    """The point in ``[0, total_weight)`` that ``key`` falls on."""
    return (bucket_hash(key) * total_weight) >> 32


def pick(key: str | bytes, weights: Sequence[int]) -> int:
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
