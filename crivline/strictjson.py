"""JSON parsing that refuses duplicate object keys, and the canonical form of a document.

RFC 8259 leaves an object with a repeated name undefined, and parsers disagree on it
(most keep the last value, some the first): a request that means different things to
different readers is refused instead, naming the key. orjson parses (fast); the
duplicate check costs a byte count and a walk of the parsed document, and only when
they disagree — a colon inside a string value, or a real duplicate — is the text parsed
again, by the standard library with a hook that sees every name.

:func:`canonical` gives the bytes two equal documents share whatever the order of
their keys or their white space: what idempotency and ETags compare.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from crivline.errors import CrivlineError

JSONDecodeError = orjson.JSONDecodeError


class DuplicateKey(CrivlineError):
    """An object of the document names ``key`` more than once."""

    def __init__(self, key: str) -> None:
        super().__init__(f"the JSON object has the key {key!r} more than once")
        self.key = key


def loads(raw: bytes | str) -> Any:
    """The parsed document; :class:`JSONDecodeError` when it is not JSON and
    :class:`DuplicateKey` when an object repeats a key."""
    doc = orjson.loads(raw)
    data = raw.encode() if isinstance(raw, str) else raw
    # Outside strings a colon follows a key and nothing else, so when the colons are as
    # many as the keys parsed, no key was lost to a repeat.
    if data.count(b":") != _keys(doc):
        try:
            json.loads(data, object_pairs_hook=_unique)
        except RecursionError:  # deeper than any limit of ours: refused by those later
            pass
    return doc


def canonical(doc: Any) -> bytes:
    """``doc`` serialised with sorted keys and no white space."""
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)


def _keys(doc: Any) -> int:
    """How many keys the objects of ``doc`` hold (iterative: any depth orjson allows).
    Plain loops, no generator per container: this runs on every request body."""
    count = 0
    stack = [doc]
    pop, push = stack.pop, stack.append
    while stack:
        item = pop()
        if type(item) is dict:
            count += len(item)
            item = item.values()
        elif type(item) is not list:
            continue
        for value in item:
            kind = type(value)
            if kind is dict or kind is list:
                push(value)
    return count


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    doc = dict(pairs)
    if len(doc) != len(pairs):
        seen: set[str] = set()
        for key, _value in pairs:
            if key in seen:
                raise DuplicateKey(key)
            seen.add(key)
    return doc
