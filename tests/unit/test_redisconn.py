"""Redis URL forms (crivline.redisconn): what each names, and one clear line for a bad one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.sentinel import SentinelConnectionPool

from crivline import redisconn
from crivline.errors import ConfigError
from crivline.settings import Settings

VAR = "CRIVLINE_REDIS_URL"


def test_single_server_with_acl_user_and_database() -> None:
    target = redisconn.parse(VAR, "redis://edge:s%40cret@cache.local:6380/2")
    assert target.mode == "single"
    assert (target.nodes, target.username, target.password, target.db, target.tls) == (
        (("cache.local", 6380),),
        "edge",
        "s@cret",
        2,
        False,
    )
    assert "s@cret" not in repr(target)
    assert redisconn.describe(target) == "redis://edge:***@cache.local:6380/2"


def test_tls_and_unix_socket() -> None:
    assert redisconn.parse(VAR, "rediss://cache:6390").tls
    assert redisconn.parse(VAR, "unix:///run/valkey.sock").mode == "single"


def test_sentinel_hosts_master_and_database() -> None:
    target = redisconn.parse(VAR, "redis+sentinel://app:pw@s1:26379,s2:26380,[::1]:26381/edge/3")
    assert target.mode == "sentinel"
    assert target.nodes == (("s1", 26379), ("s2", 26380), ("::1", 26381))
    assert (target.master, target.db, target.username, target.password) == ("edge", 3, "app", "pw")
    assert redisconn.describe(target) == (
        "redis+sentinel://app:***@s1:26379,s2:26380,[::1]:26381/edge/3"
    )
    assert redisconn.parse(VAR, "rediss+sentinel://s1:26379/m").tls


def test_cluster_hosts() -> None:
    target = redisconn.parse(VAR, "redis+cluster://n1:7000,n2:7001")
    assert (target.mode, target.nodes, target.master) == (
        "cluster",
        (("n1", 7000), ("n2", 7001)),
        None,
    )


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("http://cache:6379", "must be a redis://"),
        ("cache:6379", "without a scheme"),
        ("redis://:6379", "needs a host"),
        ("redis://cache:port", "not a valid redis:// URL"),
        ("redis://cache:6379/zero", "database 'zero' is not a number"),
        ("redis+sentinel://s1:26379", "names the master"),
        ("redis+sentinel://s1:26379/m/1/x", "names the master"),
        ("redis+sentinel://s1/m", "needs a port"),
        ("redis+sentinel://s1:26379,/m", "empty host"),
        ("redis+sentinel://s1:99999/m", "out of range"),
        ("redis+cluster://n1:7000/0", "has no path"),
        ("redis+cluster://n1:x", "not a port"),
        ("redis+cluster://n1:7000?timeout=1", "no query parameters"),
    ],
)
def test_a_bad_url_names_the_variable(url: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        redisconn.parse(VAR, url)
    message = str(caught.value)
    assert message.startswith(VAR), message
    assert words in message
    assert "\n" not in message


def test_settings_check_every_form_and_the_tls_files(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-")
    settings = Settings.from_env(
        {
            "CRIVLINE_REDIS_URL": "redis+cluster://n1:7000",
            "CRIVLINE_BUS_URL": "rediss+sentinel://s1:26379/bus",
            "CRIVLINE_REDIS_TLS_CA_FILE": str(ca),
            "CRIVLINE_REDIS_SENTINEL_PASSWORD": "sentinel-pw",
        }
    )
    assert settings.redis_tls().ca_file == ca
    assert settings.sentinel_auth().password == "sentinel-pw"
    assert "sentinel-pw" not in repr(settings)
    assert "sentinel-pw" not in repr(settings.sentinel_auth())
    with pytest.raises(ConfigError, match="CRIVLINE_BUS_URL"):
        Settings.from_env({"CRIVLINE_BUS_URL": "redis+cluster://n1"})
    with pytest.raises(ConfigError, match="CRIVLINE_REDIS_TLS_CA_FILE"):
        Settings.from_env({"CRIVLINE_REDIS_TLS_CA_FILE": str(tmp_path / "missing.pem")})
    with pytest.raises(ConfigError, match="go together"):
        Settings.from_env({"CRIVLINE_REDIS_TLS_CERT_FILE": str(ca)})


async def test_each_form_gets_its_client() -> None:
    """Building a client connects nothing: each form gets the redis-py client for it."""
    single = redisconn.client(redisconn.parse(VAR, "redis://127.0.0.1:1/0"))
    sentinel = redisconn.client(
        redisconn.parse(VAR, "redis+sentinel://127.0.0.1:1/edge"),
        sentinel=redisconn.SentinelAuth("watcher", "pw"),
    )
    cluster = redisconn.client(redisconn.parse(VAR, "redis+cluster://127.0.0.1:1"))
    try:
        assert type(single) is Redis
        assert not redisconn.is_cluster(single)
        assert isinstance(sentinel.connection_pool, SentinelConnectionPool)
        assert sentinel.connection_pool.service_name == "edge"
        assert isinstance(cluster, RedisCluster)
        assert redisconn.is_cluster(cluster)
    finally:
        for client in (single, sentinel, cluster):
            await client.aclose()


@pytest.mark.parametrize("part", ["proxy", "syncd", "control"])
def test_a_bad_url_stops_each_part_with_one_line(part: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRIVLINE_")}
    env["CRIVLINE_BUS_URL"] = "redis+sentinel://127.0.0.1:26379"
    result = subprocess.run(
        [sys.executable, "-m", "crivline", part],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert "CRIVLINE_BUS_URL" in lines[0]
    assert "names the master" in lines[0]
