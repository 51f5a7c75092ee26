"""Sentinel with credentials: the data nodes' password in the URL, the Sentinels' own in
CRIVLINE_REDIS_SENTINEL_PASSWORD."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from support.valkeyha import SentinelGroup

from crivline import redisconn
from crivline.settings import Settings

pytestmark = pytest.mark.timeout(60)


async def test_sentinel_and_data_node_credentials(tmp_path: Path) -> None:
    group = await asyncio.to_thread(
        SentinelGroup.create,
        tmp_path,
        "edge",
        password="data-pw",
        sentinel_password="sentinel-pw",
    )
    hosts = group.url.removeprefix("redis+sentinel://")
    url = f"redis+sentinel://:data-pw@{hosts}"
    try:
        settings = Settings.from_env(
            {"CRIVLINE_REDIS_URL": url, "CRIVLINE_REDIS_SENTINEL_PASSWORD": "sentinel-pw"}
        )
        client = redisconn.edge_client(settings, socket_timeout=2)
        try:
            await client.set("crivline:probe", "1")
            assert await client.get("crivline:probe") == b"1"
        finally:
            await client.aclose()
        # Without the Sentinels' password no Sentinel names a master.
        anonymous = redisconn.edge_client(Settings.from_env({"CRIVLINE_REDIS_URL": url}))
        try:
            with pytest.raises(RedisConnectionError, match="No master found"):
                await anonymous.ping()
        finally:
            await anonymous.aclose()
    finally:
        await asyncio.to_thread(group.stop)
