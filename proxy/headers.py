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
    """:func:`served` plus :data:`CACHING`: the headers of an answer to a key."""
    headers = served(state, status)
    headers.update(CACHING)
    return headers


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
