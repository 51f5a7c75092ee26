"""The one JSON shape of ``/healthz`` and ``/readyz`` on control, syncd and the proxy.

Every probe answers an object with, first, the same three fields — whatever the part::

    {"status": "ready", "ready": true, "reasons": [], ...details}

- ``status``: ``/healthz`` says ``ok`` or ``failing``; ``/readyz`` says ``ready``,
  ``degraded`` (only the proxy: it was ready and still serves what it holds) or
  ``not ready``;
- ``ready``: whether this part should take traffic now — exactly when the answer is 200;
- ``reasons``: why it is not ``ok``/``ready``, in words an operator can act on (empty
  when all is well);

then the part's own details, every key in camelCase. Building the body here keeps the
three parts from drifting apart again.
"""

from __future__ import annotations

from typing import Any

OK = "ok"
FAILING = "failing"
READY = "ready"
DEGRADED = "degraded"
NOT_READY = "not ready"


def probe_body(status: str, reasons: list[str], ready: bool, **details: Any) -> dict[str, Any]:
    """The probe answer: the shared fields first, then ``details`` (camelCase keys)."""
    return {"status": status, "ready": ready, "reasons": list(reasons), **details}


def health_body(reasons: list[str], **details: Any) -> dict[str, Any]:
    """A ``/healthz`` answer: ``ok`` unless there are ``reasons``."""
    return probe_body(FAILING if reasons else OK, reasons, not reasons, **details)


def readiness_body(reasons: list[str], **details: Any) -> dict[str, Any]:
    """A ``/readyz`` answer for a part without a degraded mode: ``ready`` or ``not ready``."""
    return probe_body(NOT_READY if reasons else READY, reasons, not reasons, **details)
