"""Response headers every data endpoint sends.

``Crivline-Version`` names the environment version a response was computed from;
``Crivline-Stale`` (whole seconds) appears only while this process cannot vouch that
it is current — Redis unreachable, or syncd not keeping the edge fresh.

Answers to a key (polling, OFREP evaluations; :func:`answer`) also say
``Cache-Control: private, no-cache`` and ``Vary: Authorization, X-API-Key``: a shared
cache (a CDN in front of the edge) must never hand one key's answer to another, and a
private cache revalidates with the ETag every time (a 304 costs the edge no body).

``Crivline-Resume`` on a stream that could not resume from the client's Last-Event-ID
says why it starts over from the current state: ``behind`` (this edge did not reach the
client's version within the wait) or ``other-history`` (the id is not from this stack's
history).
"""

from __future__ import annotations

from proxy.edge.environments import Ahead, EnvState
from proxy.edge.status import EdgeStatus

VERSION = "Crivline-Version"
STALE = "Crivline-Stale"
RESUME = "Crivline-Resume"
RESUME_REASONS = {Ahead.NOT_YET: "behind", Ahead.OTHER_HISTORY: "other-history"}


CACHING = {"Cache-Control": "private, no-cache", "Vary": "Authorization, X-API-Key"}


def answer(state: EnvState, status: EdgeStatus) -> dict[str, str]:
    """:func:`served` plus :data:`CACHING`: the headers of an answer to a key (a new
    dict the caller may add to). While the edge is fresh they are a copy of the ones
    built once per version of the environment."""
    if status.degraded_since is None:
        built = _fresh.get(state.id)
        if built is None or built[0] is not state:
            built = _fresh[state.id] = (state, {VERSION: state.version_text, **CACHING})
            if len(_fresh) > _FRESH_MAX:  # environments that left: cheaper to rebuild
                _fresh.clear()
                _fresh[state.id] = built
        return built[1].copy()
    headers = served(state, status)
    headers.update(CACHING)
    return headers


# environment id -> (the version's state, its fresh answer headers); replaced on each
# version, so at most one entry per environment this process serves.
_fresh: dict[str, tuple[EnvState, dict[str, str]]] = {}
_FRESH_MAX = 100_000


def served(state: EnvState, status: EdgeStatus) -> dict[str, str]:
    headers = {VERSION: state.version_text}
    if status.degraded_since is not None:
        stale = status.stale_seconds()
        if stale is not None:
            headers[STALE] = str(stale)
    return headers


def not_resumed(headers: dict[str, str], outcome: Ahead) -> dict[str, str]:
    """``headers`` with why a stream starts over instead of resuming (when it does)."""
    reason = RESUME_REASONS.get(outcome)
    if reason is not None:
        headers[RESUME] = reason
    return headers
