"""The provider's settings, checked once at construction."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from crivline_openfeature.errors import InvalidOptions


@dataclass(frozen=True, slots=True)
class ProviderOptions:
    """Keyword options of :class:`~crivline_openfeature.CrivlineProvider` (seconds).

    ``stream``: follow ``/sdk/v1/stream`` (True) or only poll ``/sdk/v1/flags``.
    ``poll_interval``: between polls when polling is the mode, or the fallback while the
    stream cannot be opened. ``init_timeout``: how long ``initialize()`` waits for the
    first flag set before it reports an error (the provider keeps trying and becomes
    ready when one arrives). ``stale_after``: grace after losing the edge before the
    ``PROVIDER_STALE`` event. ``reconnect_min``/``reconnect_max``: the jittered,
    doubling delay between failed stream openings. ``read_timeout``: silence after
    which an open stream is taken for dead (the proxy sends a keep-alive every 10 s).
    ``connect_timeout``/``request_timeout``: for each connection and each poll.
    ``snapshot_path``: a file holding the last flag set; read at start (a cold start
    without the edge is served from it) and rewritten after every change.
    """

    stream: bool = True
    poll_interval: float = 15.0
    init_timeout: float = 5.0
    stale_after: float = 15.0
    reconnect_min: float = 0.5
    reconnect_max: float = 30.0
    read_timeout: float = 30.0
    connect_timeout: float = 5.0
    request_timeout: float = 10.0
    snapshot_path: Path | None = None

    @classmethod
    def build(cls, **options: Any) -> ProviderOptions:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise InvalidOptions(
                f"unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        values = dict(options)
        if values.get("snapshot_path") is not None:
            values["snapshot_path"] = Path(values["snapshot_path"])
        built = cls(**values)
        built._check()
        return built

    def _check(self) -> None:
        if type(self.stream) is not bool:
            raise InvalidOptions(f"stream must be True or False, not {self.stream!r}")
        for f in fields(self):
            if f.name in ("stream", "snapshot_path"):
                continue
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise InvalidOptions(f"{f.name} must be a number of seconds, not {value!r}")
            if not math.isfinite(value) or value <= 0:
                raise InvalidOptions(f"{f.name} must be a positive number of seconds: {value!r}")
        if self.reconnect_min > self.reconnect_max:
            raise InvalidOptions(
                f"reconnect_min ({self.reconnect_min}) is larger than reconnect_max "
                f"({self.reconnect_max})"
            )


def check_edge_url(edge_url: object) -> str:
    """The edge's base URL without a trailing slash."""
    if not isinstance(edge_url, str):
        raise InvalidOptions(
            f"edge_url must be a string like 'https://edge.example', not {edge_url!r}"
        )
    parts = urlsplit(edge_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidOptions(
            f"edge_url must be an http(s) URL like 'https://edge.example': {edge_url!r}"
        )
    if parts.query or parts.fragment:
        raise InvalidOptions(f"edge_url must not carry a query or fragment: {edge_url!r}")
    return edge_url.rstrip("/")


def check_server_key(server_key: object) -> str:
    if not isinstance(server_key, str) or not server_key.strip():
        raise InvalidOptions("server_key must be the environment's server key (crv_srv_…)")
    if server_key.startswith("crv_cli_"):
        raise InvalidOptions(
            "server_key is a client key (crv_cli_…); the in-process provider reads the whole "
            "flag set, which needs a server key (crv_srv_…)"
        )
    if any(c in server_key for c in "\r\n\x00"):
        raise InvalidOptions("server_key must not contain line breaks or NUL")
    return server_key.strip()
