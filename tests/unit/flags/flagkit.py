"""Small builders shared by the flag-model unit tests."""

from __future__ import annotations

from typing import Any


def flag(targeting: Any = None, **fields: Any) -> dict[str, Any]:
    """An enabled boolean flag (default ``off``), with ``targeting`` and overrides."""
    out: dict[str, Any] = {
        "state": "ENABLED",
        "variants": {"on": True, "off": False},
        "defaultVariant": "off",
    }
    if targeting is not None:
        out["targeting"] = targeting
    out.update(fields)
    return out
