"""Response headers every data endpoint sends.

``Crivline-Version`` names the environment version a response was computed from;
``Crivline-Stale`` (whole seconds) appears only while this process cannot vouch that
it is current — Redis unreachable, or syncd not keeping the edge fresh.
"""

from __future__ import annotations

from proxy.edge.environments import EnvState
from proxy.edge.status import EdgeStatus

VERSION = "Crivline-Version"
STALE = "Crivline-Stale"


def served(state: EnvState, status: EdgeStatus) -> dict[str, str]:
    headers = {VERSION: state.version_text}
    if status.degraded_since is not None:
        stale = status.stale_seconds()
        if stale is not None:
            headers[STALE] = str(stale)
    return headers
