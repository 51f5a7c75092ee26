"""JavaScript value semantics for JSONLogic: truthiness, coercion, equality, ordering.

JSONLogic is defined by its JavaScript reference implementation, so the operations
follow JavaScript's rules: ``[]`` and ``""`` are falsy and ``{}`` is truthy, ``==`` is
loose equality (``1 == "1"``), ``===`` is strict, ``null`` only loosely equals ``null``,
numbers print the way JavaScript prints them (``3.0`` → ``"3"``). Python ints and floats
are both JavaScript numbers; ``bool`` is not a number here even though Python says so.
Known simplifications: strings compare by code point (JavaScript: UTF-16 unit), and
arrays and objects compare by identity, as in JavaScript.

Numbers are IEEE doubles, as in JavaScript: an integer stays a Python ``int`` only while
it is exactly representable (|n| ≤ 2**53, :data:`MAX_SAFE`); anything larger becomes a
float (``inf`` past the double range). Arithmetic on safe integers is exact and its
result is rounded the same way, so no evaluation does unbounded integer arithmetic —
repeated squaring reaches ``inf`` in a few steps instead of growing a huge integer.
Arrays turned into strings are charged to the evaluation budget (``budget.build``).
"""

from __future__ import annotations

import math
from typing import Any, Final

from crivline.flags import budget

NAN: Final = math.nan
INF: Final = math.inf

MAX_SAFE: Final = 2**53  # JavaScript's Number.MAX_SAFE_INTEGER + 1: exact in a double
_NUMBER_CHARS: Final = frozenset("0123456789+-.eE")
_RADIX: Final = {"0x": 16, "0o": 8, "0b": 2}


def truthy(value: Any) -> bool:
    """JSONLogic truthiness: JavaScript's, except that ``[]`` is falsy."""
    t = type(value)
    if t is bool:
        return value  # type: ignore[no-any-return]
    if t is dict:
        return True
    if t is float:
        return value == value and value != 0.0  # type: ignore[no-any-return]
    return bool(value)


def big_to_float(value: int) -> float:
    """A Python integer as the nearest double (±inf when it is out of range)."""
    try:
        return float(value)
    except OverflowError:
        return INF if value > 0 else -INF


def fit(value: int | float) -> int | float:
    """A number as a double would hold it: ints beyond ±2**53 become floats."""
    if type(value) is int and not -MAX_SAFE <= value <= MAX_SAFE:
        return big_to_float(value)
    return value


def string_to_number(text: str) -> int | float:
    """JavaScript ``Number(text)``: NaN for anything that is not a number literal."""
    if len(text) >= budget.CHARS_PER_UNIT:  # reading a long string is charged as a scan
        budget.scan(len(text))
    s = text.strip()
    if not s:
        return 0
    head = s[:2].lower()
    if head in _RADIX:
        digits = s[2:]
        if not digits or "_" in digits or not digits.isascii() or not digits.isalnum():
            return NAN
        try:
            return fit(int(digits, _RADIX[head]))
        except ValueError:
            return NAN
    if s in ("Infinity", "+Infinity"):
        return INF
    if s == "-Infinity":
        return -INF
    if not _NUMBER_CHARS.issuperset(s):
        return NAN
    try:
        return float(s)
    except ValueError:
        return NAN


def to_number(value: Any) -> int | float:
    """JavaScript ``Number(value)``."""
    t = type(value)
    if t is int:
        if -MAX_SAFE <= value <= MAX_SAFE:
            return value  # type: ignore[no-any-return]
        return big_to_float(value)
    if t is float:
        return value  # type: ignore[no-any-return]
    if t is str:
        return string_to_number(value)
    if value is None:
        return 0
    if t is bool:
        return 1 if value else 0
    if t is list:
        return string_to_number(to_string(value))
    return NAN


def number_to_string(x: float) -> str:
    """JavaScript ``Number.prototype.toString()`` of a float."""
    if x != x:
        return "NaN"
    if x == 0:
        return "0"
    if x == INF:
        return "Infinity"
    if x == -INF:
        return "-Infinity"
    sign = "-" if x < 0 else ""
    text = repr(abs(x))  # the shortest digits that round-trip, as JavaScript uses
    mantissa, _, exp_text = text.partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = whole + fraction
    point = len(whole) + (int(exp_text) if exp_text else 0)
    stripped = digits.lstrip("0")
    point -= len(digits) - len(stripped)
    digits = stripped.rstrip("0")
    k, n = len(digits), point
    if k <= n <= 21:
        out = digits + "0" * (n - k)
    elif 0 < n <= 21:
        out = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        out = "0." + "0" * (-n) + digits
    else:
        e = n - 1
        exp = f"e+{e}" if e >= 0 else f"e-{-e}"
        out = (digits if k == 1 else digits[0] + "." + digits[1:]) + exp
    return sign + out


def to_string(value: Any) -> str:
    """JavaScript ``String(value)`` for JSON values."""
    t = type(value)
    if t is str:
        return value  # type: ignore[no-any-return]
    if t is int:
        if -MAX_SAFE <= value <= MAX_SAFE:
            return str(value)
        return number_to_string(big_to_float(value))
    if t is float:
        return number_to_string(value)
    if value is None:
        return "null"
    if t is bool:
        return "true" if value else "false"
    if t is list:
        budget.items(len(value))
        parts = ["" if item is None else to_string(item) for item in value]
        # Charged before joining: a list holding one long string many times over would
        # otherwise be built in full first.
        budget.build(sum(map(len, parts)) + len(parts))
        return ",".join(parts)
    if t is dict:
        return "[object Object]"
    return str(value)


def loose_eq(a: Any, b: Any) -> bool:
    """JavaScript ``a == b``."""
    ta = type(a)
    if ta is type(b) and ta is not list and ta is not dict:
        return a == b  # type: ignore[no-any-return]
    return _loose_eq_slow(a, b)


def _loose_eq_slow(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    ta, tb = type(a), type(b)
    a_num = ta is int or ta is float
    b_num = tb is int or tb is float
    if a_num and b_num:
        return a == b  # type: ignore[no-any-return]
    a_obj = ta is list or ta is dict
    b_obj = tb is list or tb is dict
    if a_obj and b_obj:
        return a is b
    if ta is bool:
        return _loose_eq_slow(1 if a else 0, b)
    if tb is bool:
        return _loose_eq_slow(a, 1 if b else 0)
    if a_num and tb is str:
        return a == string_to_number(b)  # type: ignore[no-any-return]
    if ta is str and b_num:
        return string_to_number(a) == b  # type: ignore[no-any-return]
    if ta is str and tb is str:
        return a == b  # type: ignore[no-any-return]
    if a_obj:
        return _loose_eq_slow(to_string(a), b)
    if b_obj:
        return _loose_eq_slow(a, to_string(b))
    return False


def strict_eq(a: Any, b: Any) -> bool:
    """JavaScript ``a === b``."""
    if a is None or b is None:
        return a is b
    ta, tb = type(a), type(b)
    a_num = ta is int or ta is float
    b_num = tb is int or tb is float
    if a_num or b_num:
        return a_num and b_num and a == b
    if ta is not tb:
        return False
    if ta is list or ta is dict:
        return a is b
    return a == b  # type: ignore[no-any-return]


def _primitive(value: Any) -> Any:
    t = type(value)
    return to_string(value) if t is list or t is dict else value


def less(a: Any, b: Any) -> bool:
    """JavaScript ``a < b``."""
    ta, tb = type(a), type(b)
    if (ta is int or ta is float) and (tb is int or tb is float):
        return a < b  # type: ignore[no-any-return]
    if ta is str and tb is str:
        return a < b  # type: ignore[no-any-return]
    a, b = _primitive(a), _primitive(b)
    if type(a) is str and type(b) is str:
        return a < b
    return to_number(a) < to_number(b)


def less_equal(a: Any, b: Any) -> bool:
    """JavaScript ``a <= b``."""
    ta, tb = type(a), type(b)
    if (ta is int or ta is float) and (tb is int or tb is float):
        return a <= b  # type: ignore[no-any-return]
    if ta is str and tb is str:
        return a <= b  # type: ignore[no-any-return]
    a, b = _primitive(a), _primitive(b)
    if type(a) is str and type(b) is str:
        return a <= b
    return to_number(a) <= to_number(b)


def divide(a: Any, b: Any) -> int | float:
    """JavaScript ``a / b`` (division by zero gives ±Infinity or NaN)."""
    x, y = to_number(a), to_number(b)
    if y == 0:
        if x == 0 or x != x:
            return NAN
        negative = (x < 0) != (math.copysign(1.0, y) < 0)
        return -INF if negative else INF
    return x / y


def remainder(a: Any, b: Any) -> int | float:
    """JavaScript ``a % b``: the sign follows the dividend."""
    x, y = to_number(a), to_number(b)
    if type(x) is int and type(y) is int:
        if y == 0:
            return NAN
        r = abs(x) % abs(y)
        return -r if x < 0 else r
    if y == 0 or x != x or y != y or x in (INF, -INF):
        return NAN
    if y in (INF, -INF):
        return x
    return math.fmod(x, y)


def extreme(values: list[Any], biggest: bool) -> int | float | None:
    """JavaScript ``Math.max``/``Math.min`` over coerced values; None for no values."""
    if not values:
        return None
    numbers = [to_number(v) for v in values]
    for n in numbers:
        if n != n:
            return NAN
    return max(numbers) if biggest else min(numbers)


def variant_name(value: Any) -> str | None:
    """The variant a targeting result names: strings as they are, ``true``/``false``
    for booleans, JavaScript's spelling for numbers; None for null, arrays and objects."""
    t = type(value)
    if t is str:
        return value  # type: ignore[no-any-return]
    if t is bool:
        return "true" if value else "false"
    if t is int or t is float:
        return to_string(value)
    return None
