"""The status page's browser session: a cookie that holds an HMAC derived from the
operator token (never the token itself) and its expiry, so changing the token ends
every session."""

from __future__ import annotations

import base64
import hashlib
import hmac

SESSION_SECONDS = 12 * 3600
COOKIE = "crivline_status"

_SESSION_CONTEXT = b"crivline/proxy/status-session/v1"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _session_mac(token: str, expires: int) -> str:
    secret = token.encode("utf-8", "surrogateescape")
    key = hmac.new(secret, _SESSION_CONTEXT, hashlib.sha256).digest()
    return _b64(hmac.new(key, b"%d" % expires, hashlib.sha256).digest())


def session_cookie(token: str, now: float) -> str:
    expires = int(now) + SESSION_SECONDS
    return f"{expires}.{_session_mac(token, expires)}"


def session_valid(token: str, value: str, now: float) -> bool:
    expires_text, _, mac = value.partition(".")
    if not (expires_text.isascii() and expires_text.isdigit()) or len(expires_text) > 12:
        return False
    expires = int(expires_text)
    if now >= expires:
        return False
    expected = _session_mac(token, expires).encode()
    return hmac.compare_digest(mac.encode("utf-8", "surrogateescape"), expected)


def token_matches(token: str, presented: str) -> bool:
    # surrogateescape: a header that is not UTF-8 compares as the bytes that were sent.
    return hmac.compare_digest(
        presented.encode("utf-8", "surrogateescape"), token.encode("utf-8", "surrogateescape")
    )
