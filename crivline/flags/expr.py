"""Compiled expressions and reading the evaluation data (``var``).

An :class:`Expr` is one compiled JSONLogic node: a closure over the evaluation data,
plus what is known about it at compile time (its value when it is a constant, whether
Python's truthiness of its result equals JSONLogic's, whether a ``fractional`` decides
it). The evaluation data is the context at the top of a flag's targeting and the
current item inside ``map``/``filter``/``reduce``/``all``/``none``/``some``.

At the top, ``$flagd.flagKey`` is a compile-time constant and ``$flagd.timestamp`` the
current Unix time in seconds, without copying the context.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, Final

from crivline.flags import budget
from crivline.flags.coerce import to_string

Fn = Callable[[Any], Any]


class _Dynamic:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<dynamic>"


DYNAMIC: Final = _Dynamic()


class CompileError(Exception):
    """Targeting that cannot be evaluated at all (flagd's PARSE_ERROR)."""


class Expr:
    """A compiled expression. ``const`` is its value, or ``DYNAMIC``."""

    __slots__ = ("const", "fn", "fractional", "plain")

    def __init__(
        self, fn: Fn, const: Any = DYNAMIC, *, plain: bool = False, fractional: bool = False
    ) -> None:
        self.fn = fn
        self.const = const
        # True when the result's Python truthiness is JSONLogic's (bool, None, str, int,
        # list results), so conditions can skip ``truthy()``.
        self.plain = plain
        self.fractional = fractional

    @property
    def is_const(self) -> bool:
        return self.const is not DYNAMIC

    def decided_by_fractional(self) -> Expr:
        return Expr(self.fn, self.const, plain=self.plain, fractional=True)


def _plain_value(value: Any) -> bool:
    t = type(value)
    return value is None or t is bool or t is str or t is int or t is list


def constant(value: Any, *, fractional: bool = False) -> Expr:
    def fn(_data: Any) -> Any:
        return value

    return Expr(fn, value, plain=_plain_value(value), fractional=fractional)


NULL: Final = constant(None)
ONE: Final = constant(1)


def _index(part: str) -> int | None:
    if part.isascii() and part.isdigit() and (part == "0" or part[0] != "0"):
        return int(part)
    return None


def walk(data: Any, parts: list[str]) -> Any:
    """Follow a dotted path through objects, arrays (by index) and strings."""
    for part in parts:
        t = type(data)
        if t is dict:
            data = data.get(part)
        elif t is list or t is str:
            if part == "length":
                data = len(data)
                continue
            i = _index(part)
            if i is None or i >= len(data):
                return None
            data = data[i]
        elif isinstance(data, Mapping):
            data = data.get(part)
        else:
            return None
        if data is None:
            return None
    return data


def flagd_properties(flag_key: str) -> dict[str, Any]:
    return {"flagKey": flag_key, "timestamp": int(time.time())}


def enriched(data: Any, flag_key: str) -> dict[str, Any]:
    """The whole top-level data as flagd presents it: the context plus ``$flagd``."""
    out = dict(data) if isinstance(data, Mapping) else {}
    out["$flagd"] = flagd_properties(flag_key)
    return out


def lookup(data: Any, key: Any, top: bool, flag_key: str) -> Any:
    """``{"var": key}`` for a key known only at evaluation time."""
    if key is None or key == "" or (type(key) is list and not key):
        return enriched(data, flag_key) if top else data
    parts = to_string(key).split(".")
    if top and parts[0] == "$flagd":
        return walk(flagd_properties(flag_key), parts[1:])
    return walk(data, parts)


def _identity(data: Any) -> Any:
    return data


def _now(_data: Any) -> int:
    return int(time.time())


def getter(key: Any, top: bool, flag_key: str) -> Expr:
    """``{"var": key}`` for a constant key, specialised for its path."""
    if key is None or key == "" or (type(key) is list and not key):
        if not top:
            return Expr(_identity)
        return Expr(lambda data: enriched(data, flag_key))
    parts = (key if type(key) is str else to_string(key)).split(".")
    if top and parts[0] == "$flagd":
        rest = parts[1:]
        if rest == ["flagKey"]:
            return constant(flag_key)
        if rest == ["timestamp"]:
            return Expr(_now, plain=True)
        return Expr(lambda _data: walk(flagd_properties(flag_key), rest))
    if top and len(parts) == 1:
        name = parts[0]
        # at the top the data is the context, always a Mapping
        return Expr(lambda data: data.get(name))
    return Expr(lambda data: walk(data, parts))


def with_default(base: Expr, default: Expr) -> Expr:
    """``{"var": [key, default]}``: the default replaces a missing or null value."""
    if base.is_const:
        return base if base.const is not None else default
    fn = base.fn
    if default.is_const:
        value = default.const

        def var_or_constant(data: Any) -> Any:
            v = fn(data)
            return value if v is None else v

        return Expr(var_or_constant)
    default_fn = default.fn

    def var_or_expression(data: Any) -> Any:
        v = fn(data)
        return default_fn(data) if v is None else v

    return Expr(var_or_expression)


def missing_keys(data: Any, keys: list[Any], top: bool, flag_key: str) -> list[Any]:
    budget.items(len(keys))
    out = []
    for k in keys:
        v = lookup(data, k, top, flag_key)
        if v is None or v == "":
            out.append(k)
    return out
