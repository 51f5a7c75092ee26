"""The exceptions every part of Crivline raises on purpose.

::

    CrivlineError
     ├── ConfigError            a setting is missing or malformed (names the variable)
     ├── StartupError           the process cannot start: port in use, folder not writable …
     │    ├── DatabaseUnavailable   the central Postgres cannot be reached
     │    ├── StackRunning          another `crivline up` holds the data folder
     │    └── SnapshotFileError     a snapshot file (export, bootstrap, state) is unreadable
     ├── MigrationError         a migration failed or was edited after being applied
     └── ApiError               an HTTP request is refused; ``status`` is its HTTP status
          ├── BadRequest            400
          ├── Unauthorized          401
          ├── Forbidden             403
          ├── NotFound              404
          ├── RequestTimeout        408
          ├── Conflict              409
          ├── PreconditionFailed    412
          ├── PayloadTooLarge       413
          ├── UnsupportedMediaType  415
          ├── Unprocessable         422
          ├── TooManyRequests       429
          └── ServiceUnavailable    503

Command-line entry points turn a ``CrivlineError`` into one line on stderr and a
non-zero exit; web apps render an ``ApiError`` in their own wire format (problem+json
for control, OFREP shapes for the proxy). Anything else is a bug and is logged as one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class CrivlineError(Exception):
    """Base of every deliberate Crivline error."""


class ConfigError(CrivlineError):
    """A setting is missing or malformed."""


class StartupError(CrivlineError):
    """The process cannot start."""


class DatabaseUnavailable(StartupError):
    """The central Postgres cannot be reached."""


class StackRunning(StartupError):
    """Another `crivline up` already runs on this data folder."""


class SnapshotFileError(StartupError):
    """A snapshot file that cannot be read: names the file and what is wrong."""


class MigrationError(CrivlineError):
    """A migration failed, or an applied migration was edited."""


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """One precise complaint about a request body: where, and what is wrong."""

    path: str
    message: str


class ApiError(CrivlineError):
    """An HTTP request refused with a clear reason."""

    status: int = 500
    title: str = "Internal Server Error"

    def __init__(
        self,
        detail: str,
        *,
        problems: Sequence[FieldProblem] = (),
        headers: dict[str, str] | None = None,
        extra: dict[str, object] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.problems = tuple(problems)
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})


class BadRequest(ApiError):
    status, title = 400, "Bad Request"


class Unauthorized(ApiError):
    status, title = 401, "Unauthorized"


class Forbidden(ApiError):
    status, title = 403, "Forbidden"


class NotFound(ApiError):
    status, title = 404, "Not Found"


class RequestTimeout(ApiError):
    status, title = 408, "Request Timeout"


class Conflict(ApiError):
    status, title = 409, "Conflict"


class PreconditionFailed(ApiError):
    status, title = 412, "Precondition Failed"


class PayloadTooLarge(ApiError):
    status, title = 413, "Payload Too Large"


class UnsupportedMediaType(ApiError):
    status, title = 415, "Unsupported Media Type"


class Unprocessable(ApiError):
    status, title = 422, "Unprocessable Content"


class TooManyRequests(ApiError):
    status, title = 429, "Too Many Requests"


class ServiceUnavailable(ApiError):
    status, title = 503, "Service Unavailable"
