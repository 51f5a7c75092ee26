"""Strict JSON: duplicate keys refused with their name, canonical bytes for equality."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crivline import strictjson

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_documents_without_repeats_parse_as_orjson_parses_them(doc: Any) -> None:
    raw = orjson.dumps(doc)
    assert strictjson.loads(raw) == orjson.loads(raw)


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        (b'{"a": 1, "a": 2}', "a"),
        (b'{"context": {"plan": "pro", "plan": "free"}}', "plan"),
        (b'{"x": "a:b", "y": [{"k": 1, "k": 1}]}', "k"),  # a colon in a string, too
        (b'{"u": "http://x", "u": "http://y"}', "u"),
        ('{"ä": 1, "ä": 2}'.encode(), "ä"),
    ],
)
def test_a_repeated_key_is_refused_by_name(raw: bytes, key: str) -> None:
    with pytest.raises(strictjson.DuplicateKey) as caught:
        strictjson.loads(raw)
    assert caught.value.key == key
    assert repr(key) in str(caught.value)


def test_colons_inside_strings_are_not_mistaken_for_repeats() -> None:
    raw = b'{"url": "http://a:8080/x", "t": "12:30:00", "o": {"k": ":"}}'
    assert strictjson.loads(raw) == orjson.loads(raw)


def test_malformed_json_is_a_decode_error() -> None:
    with pytest.raises(strictjson.JSONDecodeError):
        strictjson.loads(b'{"a": ')


def test_equal_documents_have_equal_canonical_bytes() -> None:
    one = strictjson.loads(b'{"b": 1, "a": {"d": [1, 2], "c": null}}')
    two = strictjson.loads(b'{ "a" : { "c" : null, "d" : [1,2] }, "b" : 1 }')
    assert strictjson.canonical(one) == strictjson.canonical(two)
    assert strictjson.canonical(one) == b'{"a":{"c":null,"d":[1,2]},"b":1}'


def test_the_deepest_document_orjson_takes_is_checked_without_recursion() -> None:
    deep = b'{"a": ' * 1000 + b"1" + b"}" * 1000
    doc = strictjson.loads(deep)
    for _ in range(1000):
        doc = doc["a"]
    assert doc == 1
    repeated = b'{"a": ' * 1000 + b'{"k": 1, "k": 2}' + b"}" * 1000
    strictjson.loads(repeated)  # too deep for the second reader: left to the depth limits
