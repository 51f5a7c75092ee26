"""The status page's pure parts, without a browser: its session cookie and its rates."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from proxy.metrics import Metrics
from proxy.routes.status_assets import PAGE_HTML, SCRIPT, STYLE, content_security_policy
from proxy.routes.status_sampler import StatusSampler, Totals, client_traffic
from proxy.routes.status_session import (
    SESSION_SECONDS,
    EndedSessions,
    SignInLimit,
    session_cookie,
    session_of,
)

TOKEN = "the-operator-token"


def test_a_session_is_an_hmac_of_the_token_that_expires() -> None:
    now = 1_800_000_000.0
    cookie = session_cookie(TOKEN, now)
    assert TOKEN not in cookie
    assert session_of(TOKEN, cookie, now) is not None
    assert session_of(TOKEN, cookie, now + SESSION_SECONDS - 1) is not None
    assert session_of(TOKEN, cookie, now + SESSION_SECONDS) is None
    assert session_of("a-new-token", cookie, now) is None  # rotating the token ends sessions
    assert session_cookie(TOKEN, now) != cookie  # each sign-in is its own session
    expires, session_id, mac = cookie.split(".")
    later = str(int(expires) + 3600)
    assert session_of(TOKEN, f"{later}.{session_id}.{mac}", now) is None  # expiry signed
    assert session_of(TOKEN, f"{expires}.x{session_id[1:]}.{mac}", now) is None  # id signed
    for junk in ("", ".", "x.y", "-1.abc", f"{expires}.", "9" * 40 + ".abc", "a.b.c.d"):
        assert session_of(TOKEN, junk, now) is None


def test_ended_sessions_are_refused_and_forgotten_once_expired() -> None:
    now = 1_800_000_000.0
    ended = EndedSessions()
    first = session_of(TOKEN, session_cookie(TOKEN, now), now)
    second = session_of(TOKEN, session_cookie(TOKEN, now + 10), now + 10)
    assert first is not None
    assert second is not None
    ended.end(first, now)
    assert first in ended
    assert second not in ended
    ended.end(second, now + SESSION_SECONDS + 1)  # first has expired by then
    assert first not in ended


def test_failed_sign_ins_are_limited_per_address_within_the_window() -> None:
    limit = SignInLimit(max_failures=3, window=60.0, capacity=100)
    for i in range(3):
        assert limit.retry_after("10.0.0.1", 1000.0 + i) == 0
        limit.failed("10.0.0.1", 1000.0 + i)
    assert limit.retry_after("10.0.0.1", 1003.0) == 57
    assert limit.retry_after("10.0.0.2", 1003.0) == 0  # another address is not affected
    assert limit.retry_after("10.0.0.1", 1060.0) == 0  # the window is over
    for i in range(500):  # a flood of addresses stays within the capacity
        limit.failed(f"192.0.2.{i}", 2000.0)
    assert len(limit._failures) <= 100


class _NoEnvironments:
    def states(self) -> list[Any]:
        return []


def test_rates_are_over_the_window_and_operator_routes_do_not_count() -> None:
    metrics = Metrics()
    sampler = StatusSampler(metrics, _NoEnvironments())  # type: ignore[arg-type]
    sampler.tick(100.0)
    for _ in range(30):
        metrics.observe_request("ofrep_bulk", "POST", 200, 0.001)
    for _ in range(10):
        metrics.observe_request("sdk_flags", "GET", 401, 0.001)
    for _ in range(5):
        metrics.observe_request("ofrep_flag", "POST", 503, 0.001)
    for _ in range(50):
        metrics.observe_request("status_data", "GET", 200, 0.001)
        metrics.observe_request("metrics", "GET", 200, 0.001)
    traffic = client_traffic(metrics)
    assert set(traffic) == {"ofrep_bulk", "sdk_flags", "ofrep_flag"}
    assert traffic["sdk_flags"] == Totals(10, 10, 0)
    sampler.tick(105.0)
    current = Totals(45, 10, 5)
    assert sampler.rates(105.0, current) == {
        "requests": 9.0,
        "clientErrors": 2.0,
        "serverErrors": 1.0,
        "seconds": 5.0,
    }
    assert sampler.series() == [[105.0, 9.0, 3.0]]
    # Once the window has passed, the old sample no longer counts.
    for second in range(106, 121):
        sampler.tick(float(second))
    assert sampler.rates(120.0, current)["requests"] == 0.0


def test_changes_are_recorded_from_the_second_sighting_on() -> None:
    def state(version: int, committed: float, loaded: float) -> Any:
        return SimpleNamespace(id="env", version=version, committed_at=committed, loaded_at=loaded)

    class Cache:
        current: list[Any] = []

        def states(self) -> list[Any]:
            return self.current

    cache = Cache()
    sampler = StatusSampler(Metrics(), cache)  # type: ignore[arg-type]
    cache.current = [state(3, 10.0, 500.0)]  # loaded at start-up: an old commit, no change
    sampler.observe_changes()
    assert list(sampler.changes) == []
    cache.current = [state(4, 600.0, 600.25)]
    sampler.observe_changes()
    sampler.observe_changes()  # seen again: still one change
    [change] = sampler.changes
    assert (change.version, change.seconds) == (4, 0.25)


def test_the_page_has_no_external_assets_and_pins_its_inline_code() -> None:
    assert "http://" not in PAGE_HTML.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in PAGE_HTML
    assert "<script src" not in PAGE_HTML
    assert f"<script>{SCRIPT}</script>" in PAGE_HTML
    assert f"<style>{STYLE}</style>" in PAGE_HTML
    policy = content_security_policy()
    assert "default-src 'none'" in policy
    assert "connect-src 'self'" in policy
    assert "unsafe-inline" not in policy
