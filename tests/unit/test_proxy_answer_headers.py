"""The answer headers built once per environment version are the ones built per request:
a new version gets its own, a copy is handed out each time, and a degraded edge still
says how stale it is."""

from __future__ import annotations

import uuid

from crivline import keyspace as ks
from proxy import headers
from proxy.edge.environments import EnvState, build_state
from proxy.edge.status import EdgeStatus

ENV = str(uuid.uuid4())


def _state(version: int) -> EnvState:
    return build_state(
        {
            ks.F_VERSION: str(version).encode(),
            ks.F_FLAGSET: b'{"flags":{}}',
            ks.F_ENVIRONMENT: ENV.encode(),
            ks.F_COMMITTED_AT: b"1771622898.5",
            ks.F_APPLIED_AT: b"1771622898.6",
        }
    )


def _fresh() -> EdgeStatus:
    status = EdgeStatus()
    status.redis_back()
    status.loaded(True)
    status.observed(syncd_alive=True, epoch="e", reconciled_at=1e12, now=1e12)
    assert status.degraded_since is None
    return status


def test_fresh_headers_are_per_version_and_equal_to_the_per_request_ones() -> None:
    status = _fresh()
    seven, eight = build_state_pair()
    first = headers.answer(seven, status)
    assert first == {**headers.served(seven, status), **headers.CACHING}
    assert list(first) == ["Crivline-Version", "Cache-Control", "Vary"]
    assert first["Crivline-Version"] == "7"
    first["ETag"] = '"mutated by a route"'
    again = headers.answer(seven, status)
    assert "ETag" not in again  # each answer gets its own copy
    assert again is not first
    assert headers.answer(eight, status)["Crivline-Version"] == "8"
    assert headers.answer(seven, status)["Crivline-Version"] == "7"


def test_a_degraded_edge_still_says_how_stale_it_is() -> None:
    status = _fresh()
    seven, _ = build_state_pair()
    headers.answer(seven, status)  # built while fresh
    status.redis_lost("gone", now=100.0)
    out = headers.answer(seven, status)
    assert out["Crivline-Version"] == "7"
    assert "Crivline-Stale" in out
    assert list(out)[-2:] == ["Cache-Control", "Vary"]


def build_state_pair() -> tuple[EnvState, EnvState]:
    return _state(7), _state(8)
