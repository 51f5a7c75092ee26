"""Every HTTP operation of the control API, one module per kind of object."""

from __future__ import annotations

from control.routes import (
    audit,
    flags,
    flagsets,
    ingest,
    keys,
    ops,
    plans,
    projects,
    segments,
    states,
    tokens,
    webhooks,
)
from control.routing import Operation


def operations() -> list[Operation]:
    """All operations, in the order the OpenAPI document lists them."""
    groups = (
        ops,
        projects,
        flags,
        states,
        segments,
        keys,
        tokens,
        flagsets,
        audit,
        plans,
        webhooks,
        ingest,
    )
    return [op for group in groups for op in group.api.operations]
