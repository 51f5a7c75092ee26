"""The sync's pure rules: versions named by ETags, and the reconnection delays."""

from __future__ import annotations

import pytest

from crivline_openfeature.held import FlagSetHolder
from crivline_openfeature.options import ProviderOptions
from crivline_openfeature.sync import EdgeSync, etag_version


@pytest.mark.parametrize(
    ("etag", "version"),
    [
        ('"12-0123456789abcdef"', 12),
        ('W/"7-ab"', 7),
        ("3-x", 3),
        (None, None),
        ("", None),
        ('"abc-12"', None),
        ('"' + "9" * 20 + '-a"', None),
    ],
)
def test_the_version_an_etag_names(etag: str | None, version: int | None) -> None:
    assert etag_version(etag) == version


class Silent:
    def applied(self, applied: object) -> None: ...
    def contact(self) -> None: ...
    def stale(self, seconds: float) -> None: ...
    def refused(self, error: object) -> None: ...


def test_reconnection_delays_double_with_jitter_up_to_the_cap_and_honour_retry_after() -> None:
    options = ProviderOptions.build(reconnect_min=0.5, reconnect_max=8.0)
    sync = EdgeSync("http://e", "k", options, FlagSetHolder(), Silent(), user_agent="t")
    for failures, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (40, 8.0)]:
        delays = [sync._backoff(failures, None) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays), (failures, min(delays))
        assert len(set(delays)) > 100  # jittered: reconnecting clients do not move in step
    assert sync._backoff(1, 5.0) == 5.0  # Retry-After wins over a shorter delay
    assert sync._backoff(1, 3600.0) == 8.0  # but not beyond the cap
