"""The status page's pure parts, without a browser: its session cookie and its rates."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from proxy.metrics import Metrics
from proxy.routes.status_assets import PAGE_HTML, SCRIPT, STYLE, content_security_policy
from proxy.routes.status_sampler import StatusSampler, Totals, client_traffic
from proxy.routes.status_session import SESSION_SECONDS, session_cookie, session_valid

TOKEN = "the-operator-token"


def test_a_session_is_an_hmac_of_the_token_that_expires() -> None:
    now = 1_800_000_000.0
    cookie = session_cookie(TOKEN, now)
    assert TOKEN not in cookie
    assert session_valid(TOKEN, cookie, now)
    assert session_valid(TOKEN, cookie, now + SESSION_SECONDS - 1)
    assert not session_valid(TOKEN, cookie, now + SESSION_SECONDS)
    assert not session_valid("a-new-token", cookie, now)  # rotating the token ends sessions
    expires, _, mac = cookie.partition(".")
    later = str(int(expires) + 3600)
    assert not session_valid(TOKEN, f"{later}.{mac}", now)  # the expiry is signed
    for junk in ("", ".", "x.y", "-1.abc", f"{expires}.", "9" * 40 + ".abc"):
        assert not session_valid(TOKEN, junk, now)


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
