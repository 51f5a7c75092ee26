"""The presented key's hash is memoised per process, bounded, and is the stored hash."""

from __future__ import annotations

from crivline import tokens
from proxy import auth


def test_the_memoised_hash_is_the_stored_hash_and_the_memo_is_bounded() -> None:
    key = "crv_srv_" + "k" * 40
    first = auth.key_hash(key)
    hits = auth.key_hash.cache_info().hits
    assert auth.key_hash(key) == first == tokens.hex_digest(key)
    assert auth.key_hash.cache_info().hits == hits + 1
    assert auth.key_hash("crv_srv_other") != first
    assert auth.key_hash.cache_info().maxsize == 16_384
