"""Small HTTP helpers shared by the routes: JSON answers, ETags, path and query values."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson
from aiohttp import web

from crivline import httpserver
from crivline.errors import BadRequest, NotFound, PreconditionFailed

KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
_KEY_RE = re.compile(KEY_PATTERN)


def json_response(
    body: Any, *, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps(body),
        content_type="application/json",
        headers=dict(headers or {}),
    )


def etag(revision: int) -> str:
    """The strong ETag of a revision (or a version) number."""
    return f'"{revision}"'


def is_key(value: str) -> bool:
    """Whether ``value`` can be a project, environment, flag or segment key."""
    return _KEY_RE.fullmatch(value) is not None


def path_key(request: web.Request, name: str) -> str:
    """A slug from the URL. One that cannot exist is simply not found (no query needed)."""
    value = request.match_info[name]
    if not is_key(value):
        raise NotFound(f"no {name} {value!r}")
    return value


def path_uuid(request: web.Request, name: str) -> str:
    value = request.match_info[name]
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise NotFound(f"no {name} {value!r}") from None


@dataclass(frozen=True, slots=True)
class Precondition:
    """An ``If-Match`` header: the revisions the client believes current.

    Checked by the data layer under the row lock, so a stale writer is refused even when
    another writer commits between its read and its write. Without ``If-Match`` a write
    is unconditional (last writer wins, as with ``curl``); clients that edit what they
    read should send it.
    """

    tags: frozenset[str]
    any: bool = False

    def check(self, revision: int | None, what: str) -> None:
        """Refuse with 412 unless the current ``revision`` (None: absent) is expected."""
        if revision is None:
            raise PreconditionFailed(
                f"If-Match was given but {what} does not exist", extra={"currentRevision": None}
            )
        if self.any or etag(revision) in self.tags:
            return
        raise PreconditionFailed(
            f"{what} has changed since you read it: it is at revision {revision};"
            " read it again and reapply your change",
            headers={"ETag": etag(revision)},
            extra={"currentRevision": revision},
        )


_QUOTED: Final = re.compile(r'"[^"]*"')


def if_match(request: web.Request) -> Precondition | None:
    raw = request.headers.get("If-Match")
    if raw is None:
        return None
    tags = set()
    for part in raw.split(","):
        tag = part.strip()
        if tag.isdigit():
            # A bare revision (If-Match: 2) is what a hand-written request often sends:
            # RFC 9110 wants it quoted, but it can only mean one thing, so it counts.
            tag = f'"{tag}"'
        elif tag and tag != "*" and not _QUOTED.fullmatch(tag.removeprefix("W/")):
            raise BadRequest(
                f'If-Match must list entity tags in double quotes, like "3" (the ETag '
                f"of what you read), or *; {tag!r} is neither"
            )
        if tag:
            tags.add(tag)
    # Weak tags never match under If-Match (RFC 9110 §13.1.1 uses strong comparison).
    return Precondition(tags=frozenset(t for t in tags if not t.startswith("W/")), any="*" in tags)


def if_none_match(request: web.Request, current: str) -> bool:
    """True when the client's cached copy (If-None-Match) is ``current``."""
    return httpserver.etag_matches(request.headers.get("If-None-Match"), current)


def query_choice(request: web.Request, name: str, choices: tuple[str, ...], default: str) -> str:
    value = request.query.get(name, default)
    if value not in choices:
        raise BadRequest(f"query parameter {name} must be one of {', '.join(choices)}")
    return value


def query_int(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    value = httpserver.decimal(raw)
    if value is None or not lo <= value <= hi:
        raise BadRequest(f"query parameter {name} must be a whole number from {lo} to {hi}")
    return value
