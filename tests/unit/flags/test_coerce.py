"""JavaScript value semantics used by the JSONLogic operations."""

from __future__ import annotations

import math
from typing import Any

import pytest

from crivline.flags.coerce import (
    divide,
    less,
    less_equal,
    loose_eq,
    number_to_string,
    remainder,
    strict_eq,
    to_number,
    to_string,
    truthy,
    variant_name,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, False),
        (False, False),
        (True, True),
        (0, False),
        (0.0, False),
        (math.nan, False),
        (-1, True),
        ("", False),
        ("0", True),
        ("false", True),
        ([], False),  # JSONLogic, unlike JavaScript
        ([0], True),
        ({}, True),  # JavaScript: objects are truthy
    ],
)
def test_truthy(value: Any, expected: bool) -> None:
    assert truthy(value) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", 0),
        ("  12 ", 12),
        ("1e3", 1000),
        (".5", 0.5),
        ("5.", 5),
        ("-2.5", -2.5),
        ("0x10", 16),
        ("0b101", 5),
        ("0o17", 15),
        ("Infinity", math.inf),
        ("-Infinity", -math.inf),
        (None, 0),
        (True, 1),
        (False, 0),
        ([], 0),
        ([7], 7),
        (["8"], 8),
        ([None], 0),
        (7, 7),
        (2.5, 2.5),
    ],
)
def test_to_number(value: Any, expected: float) -> None:
    assert to_number(value) == expected


@pytest.mark.parametrize(
    "value",
    ["abc", "12px", "1_000", "nan", "inf", "infinity", "0x", "0xZZ", "1e", "+-1", [1, 2], {}],
)
def test_to_number_nan(value: Any) -> None:
    n = to_number(value)
    assert n != n  # NaN


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (3.0, "3"),
        (-0.0, "0"),
        (0.1, "0.1"),
        (0.1 + 0.2, "0.30000000000000004"),
        (1e21, "1e+21"),
        (1e20, "100000000000000000000"),
        (2.0**60, "1152921504606847000"),  # JavaScript prints the shortest digits
        (1.5e-7, "1.5e-7"),
        (1e-6, "0.000001"),
        (123.456, "123.456"),
        (-1.5e300, "-1.5e+300"),
        (5e-324, "5e-324"),
        (math.nan, "NaN"),
        (math.inf, "Infinity"),
        (-math.inf, "-Infinity"),
    ],
)
def test_number_to_string_matches_javascript(value: float, expected: str) -> None:
    assert number_to_string(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "null"),
        (True, "true"),
        (12, "12"),
        (2.0, "2"),
        (["a", None, [1, 2]], "a,,1,2"),
        ({"a": 1}, "[object Object]"),
    ],
)
def test_to_string(value: Any, expected: str) -> None:
    assert to_string(value) == expected


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (1, 1.0, True),
        (1, "1", True),
        ("1.0", 1, True),
        ("", 0, True),
        (True, 1, True),
        (True, "1", True),
        (False, "", True),
        (None, None, True),
        (None, 0, False),  # null only equals null
        (None, "", False),
        (None, False, False),
        ("a", "a", True),
        ("a", "b", False),
        ([1], 1, True),
        (["a"], "a", True),
        ([1, 2], "1,2", True),
        ([], [], False),  # distinct arrays are never equal
        (math.nan, math.nan, False),
    ],
)
def test_loose_eq(a: Any, b: Any, expected: bool) -> None:
    assert loose_eq(a, b) is expected
    assert loose_eq(b, a) is expected


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (1, 1.0, True),
        (1, "1", False),
        (True, 1, False),
        (None, None, True),
        (None, False, False),
        ("x", "x", True),
        ([1], [1], False),
    ],
)
def test_strict_eq(a: Any, b: Any, expected: bool) -> None:
    assert strict_eq(a, b) is expected


def test_strict_eq_identity_of_arrays() -> None:
    same = [1]
    assert strict_eq(same, same)


@pytest.mark.parametrize(
    ("a", "b", "lt", "le"),
    [
        (1, 2, True, True),
        (2, 2.0, False, True),
        ("a", "b", True, True),
        ("10", "9", True, True),  # both strings: compared as strings
        ("10", 9, False, False),  # one number: compared as numbers
        (None, 1, True, True),  # null is 0
        ("abc", 1, False, False),  # NaN compares false
        ([2], 3, True, True),
        (True, 2, True, True),
    ],
)
def test_less(a: Any, b: Any, lt: bool, le: bool) -> None:
    assert less(a, b) is lt
    assert less_equal(a, b) is le


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [(7, 2, 3.5), (1, 0, math.inf), (-1, 0, -math.inf), (1, -0.0, -math.inf), ("9", "3", 3)],
)
def test_divide(a: Any, b: Any, expected: float) -> None:
    assert divide(a, b) == expected


def test_divide_zero_by_zero_is_nan() -> None:
    n = divide(0, 0)
    assert n != n


@pytest.mark.parametrize(
    ("a", "b", "expected"), [(7, 3, 1), (-7, 3, -1), (7, -3, 1), (7.5, 2, 1.5), (-7.5, 2, -1.5)]
)
def test_remainder_sign_follows_dividend(a: Any, b: Any, expected: float) -> None:
    assert remainder(a, b) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("on", "on"),
        (True, "true"),
        (False, "false"),
        (3, "3"),
        (3.0, "3"),
        (None, None),
        ([], None),
    ],
)
def test_variant_name(value: Any, expected: str | None) -> None:
    assert variant_name(value) == expected
