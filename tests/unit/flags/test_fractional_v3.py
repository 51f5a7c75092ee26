"""fractional v3: the CBOR bucketing value, the scheme a flag set names, and the string
fast path agreeing byte for byte with the CBOR library."""

from __future__ import annotations

from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crivline.flags import Reason, compile_flag_set
from crivline.flags.fractional import (
    bucket_value,
    cbor_text,
    cbor_value,
    scheme_of,
    shorthand_prefix,
)


def hundred(bucketing: Any, scheme: str | None) -> dict[str, Any]:
    """A flag whose value is the bucket in [0, 100) the bucketing value falls in."""
    buckets: list[Any] = [[f"b{i}", 1] for i in range(100)]
    doc: dict[str, Any] = {
        "flags": {
            "flag": {
                "state": "ENABLED",
                "variants": {f"b{i}": i for i in range(100)} | {"none": -1},
                "defaultVariant": "none",
                "targeting": {
                    "fractional": buckets if bucketing is None else [bucketing, *buckets]
                },
            }
        }
    }
    if scheme is not None:
        doc["metadata"] = {"flagSetId": "p/e", "fractionalBucketing": scheme}
    return doc


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_the_string_fast_path_is_the_canonical_cbor_encoding(text: str) -> None:
    assert cbor_text(text) == cbor2.dumps(text, canonical=True)


@pytest.mark.parametrize("size", [0, 23, 24, 255, 256, 65535, 65536])
def test_string_heads_at_every_length_boundary(size: int) -> None:
    text = "a" * size
    assert cbor_text(text) == cbor2.dumps(text, canonical=True)


@settings(max_examples=100, deadline=None)
@given(flag_key=st.text(min_size=1, max_size=40), targeting_key=st.text(min_size=1, max_size=40))
def test_the_shorthand_is_the_array_of_flag_key_and_targeting_key(
    flag_key: str, targeting_key: str
) -> None:
    prefix, tail = shorthand_prefix(flag_key), cbor_text(targeting_key)
    assert prefix is not None
    assert tail is not None
    assert prefix + tail == cbor2.dumps([flag_key, targeting_key], canonical=True)


def test_numbers_without_a_fraction_bucket_as_integers() -> None:
    assert cbor_value(1.0) == cbor_value(1) == b"\x01"
    assert cbor_value(-0.0) == cbor_value(0)
    assert cbor_value({"b": 2.0, "a": [1.0]}) == cbor_value({"a": [1], "b": 2})
    assert cbor_value(1.5) == cbor2.dumps(1.5, canonical=True)  # a half-precision float
    assert cbor_value(1e20) != cbor_value(int(1e20))  # beyond 64 bits: stays a float
    assert cbor_value(None) is None
    assert cbor_text("\ud800") is None  # a lone surrogate is not text


def test_map_keys_are_ordered_by_their_encoding_not_by_the_document() -> None:
    assert cbor_value({"z": 1, "aa": 2}) == cbor_value({"aa": 2, "z": 1})
    assert cbor_value({"z": 1, "aa": 2})[1:3] == b"\x61z"  # type: ignore[index]


def test_a_flag_set_names_its_scheme_and_v2_is_the_default() -> None:
    assert scheme_of({"fractionalBucketing": "v3"}) == "v3"
    assert scheme_of({"fractionalBucketing": "v2"}) == "v2"
    assert scheme_of({"fractionalBucketing": "v9"}) == "v2"
    assert scheme_of({}) == "v2"
    assert scheme_of(None) == "v2"


@pytest.mark.parametrize("key", ["user-1", "jon@company.com", "ユーザー", "a"])
def test_each_scheme_hashes_what_it_says(key: str) -> None:
    v2 = compile_flag_set(hundred({"var": "k"}, "v2")).evaluate("flag", {"k": key})
    v3 = compile_flag_set(hundred({"var": "k"}, "v3")).evaluate("flag", {"k": key})
    legacy = compile_flag_set(hundred({"var": "k"}, None)).evaluate("flag", {"k": key})
    assert v2.value == legacy.value == bucket_value(key, 100)
    assert v3.value == bucket_value(cbor2.dumps(key), 100)
    assert v3.reason == Reason.TARGETING_MATCH


def test_the_keyword_overrides_the_metadata() -> None:
    doc = hundred({"var": "k"}, "v2")
    v3 = compile_flag_set(doc, bucketing="v3").evaluate("flag", {"k": "user-1"})
    assert v3.value == bucket_value(cbor2.dumps("user-1"), 100)


def test_v3_buckets_any_json_value_but_null() -> None:
    flags = compile_flag_set(hundred({"var": "k"}, "v3"))
    for value in (True, 7, 2.5, [1, "a"], {"b": None, "a": {}}):
        r = flags.evaluate("flag", {"k": value})
        assert r.value == bucket_value(cbor2.dumps(value, canonical=True), 100), value
    assert flags.evaluate("flag", {"k": None}).reason == Reason.DEFAULT
    assert flags.evaluate("flag", {}).reason == Reason.DEFAULT
    v2 = compile_flag_set(hundred({"var": "k"}, "v2"))
    assert v2.evaluate("flag", {"k": 7}).reason == Reason.DEFAULT  # v2: strings only


def test_v3_shorthand_and_constant_bucketing_values() -> None:
    flags = compile_flag_set(hundred(None, "v3"))
    r = flags.evaluate("flag", {"targetingKey": "user-1"})
    assert r.value == bucket_value(cbor2.dumps(["flag", "user-1"]), 100)
    for ctx in ({}, {"targetingKey": ""}, {"targetingKey": 12345}, {"targetingKey": True}):
        assert flags.evaluate("flag", ctx).reason == Reason.DEFAULT, ctx
    constant = compile_flag_set(hundred({"cat": ["a", "b"]}, "v3"))
    assert constant.evaluate("flag", {}).value == bucket_value(cbor2.dumps("ab"), 100)
    number = compile_flag_set(hundred(42, "v3"))
    assert number.evaluate("flag", {}).value == bucket_value(cbor2.dumps(42), 100)


def test_v3_constant_value_with_weights_known_only_at_evaluation() -> None:
    doc = {
        "flags": {
            "f": {
                "state": "ENABLED",
                "variants": {"a": "A", "b": "B"},
                "defaultVariant": "a",
                "targeting": {"fractional": ["seed", ["a", {"var": "w"}], ["b", 1]]},
            }
        },
        "metadata": {"fractionalBucketing": "v3"},
    }
    flags = compile_flag_set(doc)
    assert flags.evaluate("f", {"w": 0}).value == "B"
    assert flags.evaluate("f", {"w": "x"}).reason == Reason.DEFAULT
