"""Which exceptions count as "the database or Redis is not there", in one place.

Loops that retry, readiness checks and start-up catch these and only these: anything
else is a bug and is logged as one. Python's ``TimeoutError`` is an ``OSError``.
"""

from __future__ import annotations

import asyncpg
from redis.exceptions import RedisError

POSTGRES_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,  # a connection whose protocol state broke as it died
)
REDIS_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError)
IO_ERRORS: tuple[type[BaseException], ...] = (*POSTGRES_ERRORS, RedisError)


def is_io_error(exc: BaseException) -> bool:
    """A failure of Postgres or Redis, retried quietly; anything else is logged as a bug."""
    return isinstance(exc, IO_ERRORS)
