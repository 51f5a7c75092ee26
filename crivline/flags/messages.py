"""How validation names places and values in its messages."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Final

import orjson

_PLAIN_KEY: Final = re.compile(r"[^.\[\]\"\s]+")


def key_path(base: str, key: object) -> str:
    """``base.key``, or ``base["key"]`` when the key has dots, brackets or spaces."""
    text = key if isinstance(key, str) else str(key)
    if not _PLAIN_KEY.fullmatch(text):
        return f"{base}[{orjson.dumps(text).decode()}]"
    return f"{base}.{text}" if base else text


def describe(value: Any) -> str:
    """A value as a person reads it in a message."""
    t = type(value)
    if value is None:
        return "null"
    if t is bool:
        return f"the boolean {'true' if value else 'false'}"
    if t is str:
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"the string {orjson.dumps(shown).decode()}"
    if t is int or t is float:
        return f"the number {value!r}"
    if t is list:
        return "an array"
    if t is dict:
        return "an object"
    return f"a {t.__name__}"


def listing(names: Iterable[object], limit: int = 10) -> str:
    """``a, b, c`` — at most ``limit`` names, then how many more."""
    shown = sorted(str(n) for n in names)
    more = f" and {len(shown) - limit} more" if len(shown) > limit else ""
    return ", ".join(shown[:limit]) + more
