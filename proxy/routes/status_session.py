"""The status page's browser session, its sign-out and its sign-in limit.

A session is a cookie ``<expires>.<id>.<mac>``: a random id and its expiry under an HMAC
derived from the operator token (never the token itself), so changing the token ends
every session. Signing out ends the session on the server side too: its id is recorded
as ended in this process (:class:`EndedSessions`) and in the edge Redis until it would
have expired, so the cookie is refused by every process of the edge even if a copy of it
is replayed. While Redis is unreachable the processes that did not handle the sign-out
cannot know of it; the one that did refuses it.

Failed sign-ins (a wrong token in the form or in ``Authorization``) are limited per
client address (:class:`SignInLimit`): after ``max_failures`` within ``window`` seconds
the address gets 429 with ``Retry-After`` until the window ends.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import secrets
from dataclasses import dataclass

SESSION_SECONDS = 12 * 3600
COOKIE = "crivline_status"
MIN_TOKEN_LENGTH = 16

_SESSION_CONTEXT = b"crivline/proxy/status-session/v2"
_ID_BYTES = 16


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _session_mac(token: str, expires: int, session_id: str) -> str:
    secret = token.encode("utf-8", "surrogateescape")
    key = hmac.new(secret, _SESSION_CONTEXT, hashlib.sha256).digest()
    return _b64(hmac.new(key, f"{expires}.{session_id}".encode(), hashlib.sha256).digest())


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    expires: int


def session_cookie(token: str, now: float) -> str:
    expires = int(now) + SESSION_SECONDS
    session_id = _b64(secrets.token_bytes(_ID_BYTES))
    return f"{expires}.{session_id}.{_session_mac(token, expires, session_id)}"


def session_of(token: str, value: str, now: float) -> Session | None:
    """The session a cookie value proves (authentic, not expired), or None."""
    parts = value.split(".")
    if len(parts) != 3:
        return None
    expires_text, session_id, mac = parts
    if not (expires_text.isascii() and expires_text.isdigit()) or len(expires_text) > 12:
        return None
    if len(session_id) > 32:
        return None
    expires = int(expires_text)
    if now >= expires:
        return None
    expected = _session_mac(token, expires, session_id).encode()
    if not hmac.compare_digest(mac.encode("utf-8", "surrogateescape"), expected):
        return None
    return Session(session_id, expires)


def token_matches(token: str, presented: str) -> bool:
    # surrogateescape: a header that is not UTF-8 compares as the bytes that were sent.
    return hmac.compare_digest(
        presented.encode("utf-8", "surrogateescape"), token.encode("utf-8", "surrogateescape")
    )


class EndedSessions:
    """Sessions signed out at this process, until they would have expired."""

    def __init__(self) -> None:
        self._ended: dict[str, int] = {}

    def end(self, session: Session, now: float) -> None:
        self._ended = {sid: exp for sid, exp in self._ended.items() if exp > now}
        self._ended[session.id] = session.expires

    def __contains__(self, session: Session) -> bool:
        return session.id in self._ended


class SignInLimit:
    """At most ``max_failures`` failed sign-ins per client address per ``window``."""

    def __init__(self, max_failures: int = 5, window: float = 60.0, capacity: int = 10_000):
        self.max_failures = max_failures
        self.window = window
        self._capacity = capacity
        self._failures: dict[str, tuple[float, int]] = {}  # address -> (window start, count)

    def retry_after(self, address: str, now: float) -> int:
        """Seconds until ``address`` may try again (0: it may now)."""
        entry = self._failures.get(address)
        if entry is None or now - entry[0] >= self.window or entry[1] < self.max_failures:
            return 0
        return max(1, math.ceil(entry[0] + self.window - now))

    def failed(self, address: str, now: float) -> None:
        entry = self._failures.get(address)
        if entry is None or now - entry[0] >= self.window:
            if len(self._failures) >= self._capacity:
                self._prune(now)
            self._failures[address] = (now, 1)
        else:
            self._failures[address] = (entry[0], entry[1] + 1)

    def _prune(self, now: float) -> None:
        live = {a: e for a, e in self._failures.items() if now - e[0] < self.window}
        while len(live) >= self._capacity:  # a flood of addresses: forget the oldest
            del live[next(iter(live))]
        self._failures = live
