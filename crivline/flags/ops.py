"""The operations targeting may use: names, argument counts, and the RE2 extension."""

from __future__ import annotations

from typing import Any, Final

import re2

# name -> (fewest arguments, most arguments or None for any number)
ARITY: Final[dict[str, tuple[int, int | None]]] = {
    # data access
    "var": (0, 2),
    "missing": (1, None),
    "missing_some": (2, 2),
    # logic
    "if": (2, None),
    "?:": (3, 3),
    "==": (2, 2),
    "===": (2, 2),
    "!=": (2, 2),
    "!==": (2, 2),
    "!": (1, 1),
    "!!": (1, 1),
    "or": (1, None),
    "and": (1, None),
    # numbers
    ">": (2, 2),
    ">=": (2, 2),
    "<": (2, 3),
    "<=": (2, 3),
    "max": (1, None),
    "min": (1, None),
    "+": (1, None),
    "-": (1, 2),
    "*": (1, None),
    "/": (2, 2),
    "%": (2, 2),
    # arrays
    "map": (2, 2),
    "filter": (2, 2),
    "reduce": (2, 3),
    "all": (2, 2),
    "none": (2, 2),
    "some": (2, 2),
    "merge": (0, None),
    "in": (2, 2),
    # strings
    "cat": (1, None),
    "substr": (2, 3),
    # misc
    "log": (1, 1),
    # flagd
    "fractional": (1, None),
    "sem_ver": (3, 3),
    "starts_with": (2, 2),
    "ends_with": (2, 2),
    # Crivline extension
    "regex_match": (2, 2),
}

OPERATIONS: Final = frozenset(ARITY)

SEM_VER_OPERATORS: Final = ("=", "!=", "<", "<=", ">", ">=", "^", "~")

MAX_WEIGHT_SUM: Final = 2_147_483_647  # flagd: the weights of one fractional fit an int32


def arguments(raw: Any) -> list[Any]:
    """JSONLogic's argument list: a single non-array argument stands for ``[it]``."""
    return raw if type(raw) is list else [raw]


def arity_text(op: str) -> str:
    low, high = ARITY[op]
    if high is None:
        return f"at least {low} argument{'s' if low != 1 else ''}"
    if low == high:
        return f"exactly {low} argument{'s' if low != 1 else ''}"
    return f"{low} to {high} arguments"


def _options() -> Any:
    options = re2.Options()
    options.log_errors = False
    return options


_RE2_OPTIONS: Final = _options()


def compile_regex(pattern: str) -> Any:
    """An RE2 regex, matching in time linear in the input; ValueError if RE2 refuses it."""
    try:
        return re2.compile(pattern, _RE2_OPTIONS)
    except Exception as exc:  # re2.error, or TypeError for odd input
        detail = exc.args[0] if exc.args else exc
        if isinstance(detail, bytes):
            detail = detail.decode("utf-8", "replace")
        raise ValueError(str(detail)) from None
