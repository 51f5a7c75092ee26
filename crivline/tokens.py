"""API keys and management tokens: their format, how they are hashed, how they are shown.

A secret looks like ``crv_srv_<43 url-safe characters>`` (256 random bits). The prefix
says what it is, so a secret scanner (or a person) recognises a leaked one:

- ``crv_srv_`` — server SDK key: may download the full flag configuration.
- ``crv_cli_`` — client key: evaluation only, safe to ship in a browser.
- ``crv_mgt_`` — management token for the control API (one tenant).
- ``crv_edg_`` — edge credential: lets one edge's syncd report usage to control.

Only the SHA-256 of a secret is stored; the first eight characters after the prefix
are kept in clear as a display prefix so people can tell keys apart.
"""

from __future__ import annotations

import hashlib
import secrets
from enum import StrEnum

DISPLAY_PREFIX_LENGTH = 8


class SecretKind(StrEnum):
    SERVER = "server"
    CLIENT = "client"
    MANAGEMENT = "management"
    EDGE = "edge"


PREFIXES: dict[SecretKind, str] = {
    SecretKind.SERVER: "crv_srv_",
    SecretKind.CLIENT: "crv_cli_",
    SecretKind.MANAGEMENT: "crv_mgt_",
    SecretKind.EDGE: "crv_edg_",
}


def generate(kind: SecretKind) -> str:
    """A new random secret of ``kind``."""
    return PREFIXES[kind] + secrets.token_urlsafe(32)


def digest(secret: str) -> bytes:
    """The 32-byte SHA-256 under which a secret is stored and looked up."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()


def hex_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def display_prefix(secret: str) -> str:
    """The eight characters after the kind prefix, safe to show in a listing."""
    for prefix in PREFIXES.values():
        if secret.startswith(prefix):
            return secret[len(prefix) : len(prefix) + DISPLAY_PREFIX_LENGTH]
    return secret[:DISPLAY_PREFIX_LENGTH]


def kind_of(secret: str) -> SecretKind | None:
    """The kind a secret's prefix claims, or None for something that is not ours."""
    for kind, prefix in PREFIXES.items():
        if secret.startswith(prefix):
            return kind
    return None
