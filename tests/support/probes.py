"""What every part's ``/healthz`` and ``/readyz`` answer must look like (README, Probes)."""

from __future__ import annotations

import re
from typing import Any

CAMEL = re.compile(r"^[a-z][a-zA-Z0-9]*$")
HEALTH = {"ok", "failing"}
READINESS = {"ready", "degraded", "not ready"}


def _keys(value: Any, path: str = "") -> list[str]:
    if isinstance(value, dict):
        out = []
        for key, inner in value.items():
            out.append(f"{path}{key}")
            out.extend(_keys(inner, f"{path}{key}."))
        return out
    return []


def assert_probe(body: Any, code: int, *, endpoint: str) -> None:
    """``body`` has the shared shape: ``status``, ``ready`` (== answered 200), ``reasons``
    (empty exactly when all is well), then details, every key at every depth in camelCase."""
    assert isinstance(body, dict), body
    assert list(body)[:3] == ["status", "ready", "reasons"], body
    assert body["status"] in (HEALTH if endpoint == "healthz" else READINESS), body
    assert body["ready"] is (code == 200), (code, body)
    assert isinstance(body["reasons"], list), body
    assert all(isinstance(reason, str) and reason for reason in body["reasons"]), body
    assert (body["reasons"] == []) is (body["status"] in ("ok", "ready")), body
    wrong = [key for key in _keys(body) if not CAMEL.match(key.rsplit(".", 1)[-1])]
    assert not wrong, f"keys not in camelCase: {wrong}"
