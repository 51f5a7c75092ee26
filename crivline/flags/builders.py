"""Closure factories for the operations: each takes compiled argument functions and
returns the function that evaluates the operation on the evaluation data."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from crivline.flags import budget
from crivline.flags import fractional as fr
from crivline.flags.coerce import (
    divide,
    extreme,
    fit,
    less,
    less_equal,
    loose_eq,
    remainder,
    strict_eq,
    to_number,
    to_string,
    truthy,
)
from crivline.flags.expr import Fn, walk
from crivline.flags.semver import Version, sem_ver, version_of

# -- logic ---------------------------------------------------------------------------


def choose(cond: Fn, plain: bool, then: Fn, otherwise: Fn) -> Fn:
    if plain:

        def pick_plain(d: Any) -> Any:
            return then(d) if cond(d) else otherwise(d)

        return pick_plain

    def pick(d: Any) -> Any:
        return then(d) if truthy(cond(d)) else otherwise(d)

    return pick


def chain(table: Sequence[tuple[Fn, bool, Fn]], otherwise: Fn) -> Fn:
    rows = tuple(table)

    def run(d: Any) -> Any:
        for cond, plain, then in rows:
            v = cond(d)
            if v if plain else truthy(v):
                return then(d)
        return otherwise(d)

    return run


def equals_text(fn: Fn, text: str, strict: bool) -> Fn:
    """``==``/``===`` against a string constant."""
    if strict:

        def strict_text(d: Any) -> bool:
            v = fn(d)
            return type(v) is str and v == text

        return strict_text

    def loose_text(d: Any) -> bool:
        v = fn(d)
        return v == text if type(v) is str else loose_eq(v, text)

    return loose_text


def equals(a: Fn, b: Fn, strict: bool) -> Fn:
    test = strict_eq if strict else loose_eq

    def run(d: Any) -> bool:
        return test(a(d), b(d))

    return run


def negate(fn: Fn) -> Fn:
    def run(d: Any) -> bool:
        return not fn(d)

    return run


def truth(fn: Fn, plain: bool, want: bool) -> Fn:
    """``!!`` (want=True) and ``!`` (want=False)."""
    if plain:

        def plain_truth(d: Any) -> bool:
            return bool(fn(d)) is want

        return plain_truth

    def run(d: Any) -> bool:
        return truthy(fn(d)) is want

    return run


def all_or_any(fns: Sequence[Fn], plain: bool, is_and: bool) -> Fn:
    """``and``/``or``: the value that decided, as JavaScript's ``&&``/``||``."""
    parts = tuple(fns)

    def run(d: Any) -> Any:
        v = None
        for f in parts:
            v = f(d)
            if (bool(v) if plain else truthy(v)) is not is_and:
                return v
        return v

    return run


def compare(fns: Sequence[Fn], op: str) -> Fn:
    """``<``, ``<=``, ``>``, ``>=``, with a third argument for "between"."""
    test = less if op in ("<", ">") else less_equal
    flip = op in (">", ">=")
    a, b = fns[0], fns[1]
    if len(fns) == 2:
        if flip:

            def greater(d: Any) -> bool:
                return test(b(d), a(d))

            return greater

        def smaller(d: Any) -> bool:
            return test(a(d), b(d))

        return smaller
    c = fns[2]

    def between(d: Any) -> bool:
        x, y, z = a(d), b(d), c(d)
        if flip:
            return test(y, x) and test(z, y)
        return test(x, y) and test(y, z)

    return between


# -- numbers -------------------------------------------------------------------------


def arithmetic(fns: Sequence[Fn], op: str) -> Fn:
    """JavaScript arithmetic on doubles: every operand is a safe integer or a float
    (``to_number``), and every result is fitted back (``fit``), so no integer grows
    beyond 2**106 before it becomes a float."""
    parts = tuple(fns)
    if op == "+":

        def add(d: Any) -> Any:
            return fit(sum([to_number(f(d)) for f in parts]))

        return add
    if op == "*":

        def multiply(d: Any) -> Any:
            product: int | float = 1
            for f in parts:
                product = fit(product * to_number(f(d)))
            return product

        return multiply
    if op in ("max", "min"):
        biggest = op == "max"

        def bound(d: Any) -> Any:
            return extreme([f(d) for f in parts], biggest)

        return bound
    a = parts[0] if parts else _null
    if op == "-" and len(parts) == 1:

        def minus(d: Any) -> Any:
            return -to_number(a(d))

        return minus
    b = parts[1] if len(parts) > 1 else _null
    operation: Callable[[Any, Any], Any]
    if op == "-":
        operation = _subtract
    elif op == "/":
        operation = divide
    else:
        operation = remainder

    def binary(d: Any) -> Any:
        return operation(a(d), b(d))

    return binary


def _subtract(x: Any, y: Any) -> int | float:
    return fit(to_number(x) - to_number(y))


def _null(_d: Any) -> None:
    return None


# -- arrays and strings --------------------------------------------------------------


def listing(fns: Sequence[Fn]) -> Fn:
    parts = tuple(fns)

    def run(d: Any) -> list[Any]:
        return [f(d) for f in parts]

    return run


def member(needle: Fn, haystack: Fn, fixed: Any) -> Fn:
    """``in``, with a constant list of strings or a constant string done up front."""
    if type(fixed) is list and all(type(x) is str for x in fixed):
        members = frozenset(fixed)

        def in_strings(d: Any) -> bool:
            v = needle(d)
            return type(v) is str and v in members

        return in_strings
    if type(fixed) is str:
        text = fixed
        if len(text) >= budget.CHARS_PER_UNIT:
            scan = budget.scan
            size = len(text)

            def in_long_text(d: Any) -> bool:
                scan(size)
                return to_string(needle(d)) in text

            return in_long_text

        def in_text(d: Any) -> bool:
            return to_string(needle(d)) in text

        return in_text

    def run(d: Any) -> bool:
        return contains(haystack(d), needle(d))

    return run


def contains(haystack: Any, needle: Any) -> bool:
    t = type(haystack)
    if t is list:
        budget.items(len(haystack))
        return any(strict_eq(needle, x) for x in haystack)
    if t is str:
        budget.scan(len(haystack))
        return to_string(needle) in haystack
    return False


def concatenate(fns: Sequence[Fn]) -> Fn:
    parts = tuple(fns)

    build, small = budget.build, budget.CHARS_PER_UNIT
    if len(parts) <= _FEW:
        # Few parts, each an existing string: charged once built, at most a few times
        # the largest string that already exists.
        def run_few(d: Any) -> str:
            text = "".join([to_string(f(d)) for f in parts])
            if len(text) >= small:  # a short string costs a step, already counted
                build(len(text))
            return text

        return run_few

    def run(d: Any) -> str:
        texts = [to_string(f(d)) for f in parts]
        size = sum(map(len, texts))
        build(size)  # before joining: many parts may repeat one long string
        return "".join(texts)

    return run


_FEW = 4  # cat with at most this many parts is charged after joining


def substring(source: Fn, start: Fn, length: Fn | None) -> Fn:
    build, small = budget.build, budget.CHARS_PER_UNIT

    def run(d: Any) -> str:
        text = substr(source(d), start(d), None if length is None else length(d))
        if len(text) >= small:  # a short string costs a step, already counted
            build(len(text))
        return text

    return run


def _integer(value: Any) -> int:
    n = to_number(value)
    if n != n:
        return 0
    if n in (float("inf"), float("-inf")):
        return 1 << 62 if n > 0 else -(1 << 62)
    return int(n)


def substr(source: Any, start: Any, length: Any) -> str:
    """JSONLogic ``substr``: JavaScript's ``substr``; a negative length drops characters
    from the end."""
    s = to_string(source)
    size = len(s)
    begin = _integer(start)
    if begin < 0:
        begin = max(size + begin, 0)
    begin = min(begin, size)
    if length is None:
        return s[begin:]
    count = _integer(length)
    if count < 0:
        rest = s[begin:]
        return rest[: max(len(rest) + count, 0)]
    return s[begin : begin + count]


def merge(fns: Sequence[Fn]) -> Fn:
    parts = tuple(fns)

    def run(d: Any) -> list[Any]:
        values = [f(d) for f in parts]
        size = 0
        for v in values:
            size += len(v) if type(v) is list else 1
        budget.items(size)
        budget.build(size * budget.BYTES_PER_ITEM)
        out: list[Any] = []
        for v in values:
            if type(v) is list:
                out.extend(v)
            else:
                out.append(v)
        return out

    return run


def scoped(op: str, items: Fn, sub: Fn, initial: Fn, body: int) -> Fn:
    """``map``, ``filter``, ``reduce``, ``all``, ``some``, ``none``: ``sub`` runs with each
    item (for reduce ``{"current", "accumulator"}``) as its data. ``body`` is the size of
    ``sub`` in compiled nodes: the work of every item is charged before the loop runs."""
    charge = budget.items
    built = budget.build
    per_item = budget.BYTES_PER_ITEM
    if op == "map":

        def mapped(d: Any) -> list[Any]:
            v = items(d)
            if type(v) is not list:
                return []
            charge(len(v), body)
            built(len(v) * per_item)
            return [sub(x) for x in v]

        return mapped
    if op == "filter":

        def filtered(d: Any) -> list[Any]:
            v = items(d)
            if type(v) is not list:
                return []
            charge(len(v), body)
            built(len(v) * per_item)
            return [x for x in v if truthy(sub(x))]

        return filtered
    if op == "reduce":

        def reduced(d: Any) -> Any:
            acc = initial(d)
            v = items(d)
            if type(v) is not list:
                return acc
            charge(len(v), body)
            for x in v:
                acc = sub({"current": x, "accumulator": acc})
            return acc

        return reduced
    if op == "all":

        def every(d: Any) -> bool:
            v = items(d)
            if type(v) is not list or not v:
                return False
            charge(len(v), body)
            return all(truthy(sub(x)) for x in v)

        return every
    if op == "some":

        def some(d: Any) -> bool:
            v = items(d)
            if type(v) is not list:
                return False
            charge(len(v), body)
            return any(truthy(sub(x)) for x in v)

        return some

    def none(d: Any) -> bool:
        v = items(d)
        if type(v) is not list:
            return True
        charge(len(v), body)
        return not any(truthy(sub(x)) for x in v)

    return none


# -- flagd and Crivline operations ---------------------------------------------------


def affix(value: Fn, part: Fn, fixed: Any, start: bool) -> Fn:
    """``starts_with``/``ends_with``: null unless both sides are strings."""
    if type(fixed) is str:
        text = fixed
        if start:

            def starts(d: Any) -> bool | None:
                v = value(d)
                return v.startswith(text) if type(v) is str else None

            return starts

        def ends(d: Any) -> bool | None:
            v = value(d)
            return v.endswith(text) if type(v) is str else None

        return ends

    def run(d: Any) -> bool | None:
        v, p = value(d), part(d)
        if type(v) is not str or type(p) is not str:
            return None
        return v.startswith(p) if start else v.endswith(p)

    return run


def version_test(left: Fn, test: Callable[[Version, Version], bool], other: Version) -> Fn:
    def run(d: Any) -> bool | None:
        mine = version_of(left(d))
        return None if mine is None else test(mine, other)

    return run


def version_compare(left: Fn, op: Fn, right: Fn) -> Fn:
    def run(d: Any) -> bool | None:
        return sem_ver(left(d), op(d), right(d))

    return run


def regex_search(value: Fn, search: Callable[[str], Any]) -> Fn:
    scan = budget.scan

    def run(d: Any) -> bool | None:
        v = value(d)
        if type(v) is not str:
            return None
        if len(v) >= budget.CHARS_PER_UNIT:
            scan(len(v))
        return search(v) is not None

    return run


def targeting_key(prefix: str, top: bool) -> Callable[[Any], str | None]:
    """fractional's bucketing value without an expression: flagKey + targetingKey."""
    if top:

        def from_context(d: Any) -> str | None:
            k = d.get("targetingKey")
            return prefix + k if type(k) is str and k else None

        return from_context

    def from_item(d: Any) -> str | None:
        k = walk(d, ["targetingKey"])
        return prefix + k if type(k) is str and k else None

    return from_item


def targeting_key_cbor(flag_key: str, top: bool) -> Callable[[Any], bytes | None]:
    """fractional v3's bucketing bytes without an expression: ``[flagKey, targetingKey]``."""
    prefix = fr.shorthand_prefix(flag_key)
    text = fr.cbor_text

    def encode(k: Any) -> bytes | None:
        if type(k) is not str or not k or prefix is None:
            return None
        tail = text(k)
        return None if tail is None else prefix + tail

    if top:
        return lambda d: encode(d.get("targetingKey"))
    return lambda d: encode(walk(d, ["targetingKey"]))


def cbor_or_null(fn: Fn) -> Callable[[Any], bytes | None]:
    """fractional v3's bucketing bytes of an expression's value (None for null)."""
    encode = fr.cbor_value

    def run(d: Any) -> bytes | None:
        return encode(fn(d))

    return run


def text_or_null(fn: Fn) -> Callable[[Any], str | None]:
    def run(d: Any) -> str | None:
        v = fn(d)
        return v if type(v) is str else None

    return run


def fixed_key(key: str | bytes) -> Callable[[Any], str | bytes | None]:
    def run(_d: Any) -> str | bytes | None:
        return key

    return run


def bucket_value(select: Callable[[Any], int], variants: Sequence[Fn]) -> Fn:
    fns = tuple(variants)

    def run(d: Any) -> Any:
        i = select(d)
        return fns[i](d) if i >= 0 else None

    return run
