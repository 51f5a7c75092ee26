"""``sem_ver``: Semantic Versioning 2.0.0 comparison as flagd defines it.

A version may carry a ``v``/``V`` prefix and may be partial (``1`` and ``1.2`` mean
``1.0.0`` and ``1.2.0``); numbers are read as their JavaScript spelling (``1.2`` →
``"1.2"``). Build metadata is ignored when comparing. Operators: ``=``, ``!=``, ``<``,
``<=``, ``>``, ``>=``, ``^`` (same major version) and ``~`` (same major and minor).
Anything unparseable makes the operation return null, never raise.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable
from typing import Any, Final, TypeAlias

from crivline.flags.coerce import number_to_string

# (major, minor, patch, 1 when there is no pre-release else 0, pre-release identifiers)
# compares in SemVer precedence order with plain tuple comparison.
Version: TypeAlias = tuple[int, int, int, int, tuple[tuple[int, int, str], ...]]

# Longer strings are not versions (node-semver's MAX_LENGTH): this also bounds the work
# and the parse cache, which context values reach.
MAX_LENGTH: Final = 256
_ALNUM_HYPHEN: Final = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-")


def _numeric(part: str) -> int | None:
    if not part or not part.isascii() or not part.isdigit():
        return None
    if len(part) > 1 and part[0] == "0":
        return None
    return int(part)


def _identifiers(text: str, numeric_rules: bool) -> tuple[tuple[int, int, str], ...] | None:
    out: list[tuple[int, int, str]] = []
    for ident in text.split("."):
        if not ident or not _ALNUM_HYPHEN.issuperset(ident):
            return None
        if ident.isdigit():
            if numeric_rules and len(ident) > 1 and ident[0] == "0":
                return None
            out.append((0, int(ident), ""))
        else:
            out.append((1, 0, ident))
    return tuple(out)


@functools.lru_cache(maxsize=4096)
def parse_version(text: str) -> Version | None:
    """A comparable version for ``text`` after flagd's normalisation, or None."""
    if text[:1] in ("v", "V"):
        text = text[1:]
    cut = len(text)
    for sep in ("-", "+"):
        at = text.find(sep)
        if at != -1 and at < cut:
            cut = at
    core, rest = text[:cut], text[cut:]
    dots = core.count(".")
    if dots < 2:
        core += ".0" * (2 - dots)
    parts = core.split(".")
    if len(parts) != 3:
        return None
    numbers = [_numeric(p) for p in parts]
    major, minor, patch = numbers
    if major is None or minor is None or patch is None:
        return None
    pre: tuple[tuple[int, int, str], ...] = ()
    if rest:
        body, plus, build = rest.partition("+")
        if plus and (not build or _identifiers(build, numeric_rules=False) is None):
            return None
        if body:
            # body starts with "-" here: rest begins at the first "-" or "+"
            found = _identifiers(body[1:], numeric_rules=True)
            if found is None:
                return None
            pre = found
    return (major, minor, patch, 0 if pre else 1, pre)


def version_of(value: Any) -> Version | None:
    """Parse a context value: strings as they are, numbers by their JavaScript spelling."""
    t = type(value)
    if t is str:
        return parse_version(value) if len(value) <= MAX_LENGTH else None
    if t is int:
        return parse_version(str(value))
    if t is float:
        return parse_version(number_to_string(value))
    return None


def _same_major(a: Version, b: Version) -> bool:
    return a[0] == b[0]


def _same_minor(a: Version, b: Version) -> bool:
    return a[0] == b[0] and a[1] == b[1]


COMPARATORS: Final[dict[str, Callable[[Version, Version], bool]]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "^": _same_major,
    "~": _same_minor,
}


def sem_ver(left: Any, op: Any, right: Any) -> bool | None:
    """``{"sem_ver": [left, op, right]}`` on evaluated arguments."""
    compare = COMPARATORS.get(op) if type(op) is str else None
    if compare is None:
        return None
    a = version_of(left)
    if a is None:
        return None
    b = version_of(right)
    if b is None:
        return None
    return compare(a, b)
