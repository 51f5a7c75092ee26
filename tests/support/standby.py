"""The suite's streaming standby (the ``pg_standby`` fixture in ``conftest.py``): a test
database's URL on it, once the standby has replayed the database's creation."""

from __future__ import annotations

import asyncpg

from crivline.embedded import PostgresStandby
from support.waiting import eventually

_NOT_YET = (asyncpg.InvalidCatalogNameError, asyncpg.CannotConnectNowError, OSError)


async def standby_url_for(standby: PostgresStandby, database_url: str) -> str:
    """``database_url``'s database on ``standby`` (created a moment ago on the primary,
    it is not there at once)."""
    url = standby.url_for(database_url.rpartition("/")[2])

    async def there() -> bool:
        conn = await asyncpg.connect(url, timeout=2)
        await conn.close()
        return True

    await eventually(there, 20, "the test database on the standby", every=0.05, tolerate=_NOT_YET)
    return url
