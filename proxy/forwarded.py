"""Where a request came from and where its client reached us — as far as we may trust it.

``X-Forwarded-Proto``, ``X-Forwarded-Host`` and ``X-Forwarded-For`` come from whoever
connected; they are read only with ``CRIVLINE_TRUST_FORWARDED=on``, for a proxy that sits
behind a load balancer which sets them (and strips what clients send). Without it the
origin is the scheme of the connection and its ``Host`` header, and the client's
address is the peer's. ``CRIVLINE_PUBLIC_URL`` fixes the origin advertised in stream
URLs whatever the headers say — the safest choice behind any front end.
"""

from __future__ import annotations

import re

from aiohttp import web

from crivline.settings import Settings

# A host as URLs spell it: a name (at most 255 characters) or an IPv4/IPv6 address, and
# a port. The bound also bounds the stream-link cache, which is keyed by the origin.
_HOST = re.compile(r"(?:[A-Za-z0-9_.~-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")


def _first(value: str) -> str:
    return value.split(",", 1)[0].strip()


def origin(request: web.Request, settings: Settings) -> str | None:
    """``scheme://host[:port]`` the client reached us at, or None when the headers naming
    it are not a host (they would end up in a URL we advertise)."""
    if settings.public_url is not None:
        return settings.public_url
    proto, host = request.scheme, request.host
    if settings.trust_forwarded:
        forwarded_proto = _first(request.headers.get("X-Forwarded-Proto", "")).lower()
        if forwarded_proto in ("http", "https"):
            proto = forwarded_proto
        host = _first(request.headers.get("X-Forwarded-Host", "")) or host
    return f"{proto}://{host}" if len(host) <= 261 and _HOST.fullmatch(host) else None


def secure(request: web.Request, settings: Settings) -> bool:
    """Whether the client's connection to the edge is HTTPS."""
    if request.secure:
        return True
    if settings.public_url is not None:
        return settings.public_url.startswith("https://")
    if settings.trust_forwarded:
        return _first(request.headers.get("X-Forwarded-Proto", "")).lower() == "https"
    return False


def client_address(request: web.Request, settings: Settings) -> str:
    """The client's address: the peer's, or with trusted forwarding the last address of
    ``X-Forwarded-For`` (the one our own load balancer appended)."""
    if settings.trust_forwarded:
        chain = request.headers.get("X-Forwarded-For", "")
        last = chain.rsplit(",", 1)[-1].strip()
        if last and len(last) <= 64:
            return last
    return request.remote or "unknown"
