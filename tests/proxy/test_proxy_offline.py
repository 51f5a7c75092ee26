"""Starting without upstream, on real processes: a proxy keeps what it applied in
``CRIVLINE_STATE_DIR`` and serves it (degraded, ``Crivline-Stale``) when it starts with
its Redis away, then moves to live data; ``crivline export`` → ``crivline proxy
--bootstrap`` with neither Postgres nor Redis there."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from support.edgekit import Central, Feeder, Key, StartProxy, flag, make_key, new_env
from support.proxyprocs import proxy_env
from support.waiting import eventually

from crivline import keyspace as ks
from crivline import tokens
from crivline.embedded import ValkeyServer, free_port
from crivline.snapshot_file import FORMAT, decode

Procs = list[asyncio.subprocess.Process]


async def fetch(url: str, key: Key | str, path: str = "/sdk/v1/flags") -> tuple[int, Any, bytes]:
    headers = key.headers if isinstance(key, Key) else {"Authorization": f"Bearer {key}"}
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(url + path, headers=headers) as response,
        ):
            return response.status, response.headers.copy(), await response.read()
    except aiohttp.ClientError:
        return 0, {}, b""


async def readyz(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(url + "/readyz") as response:
        body: dict[str, Any] = orjson.loads(await response.read())
        return body


def saved_version(path: Path) -> int:
    try:
        return decode(path.read_bytes(), str(path))[0].version
    except (OSError, ValueError):
        return 0


async def start(crivline_cmd: list[str], env: dict[str, str], procs: Procs, *args: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        *crivline_cmd,
        "proxy",
        *args,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    procs.append(proc)


async def stop(proc: asyncio.subprocess.Process) -> bytes:
    proc.terminate()
    _out, err = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode == 0, err.decode(errors="replace")
    assert b"Traceback" not in err
    return err


async def test_a_proxy_started_with_redis_down_serves_its_disk_state_then_live_data(
    tmp_path: Path,
    feeder: Feeder,
    valkey: ValkeyServer,
    redis_url: str,
    crivline_cmd: list[str],
    processes: Procs,
) -> None:
    env, key = new_env(), make_key("server")
    state = tmp_path / "state"
    await feeder.write(env, {"a": flag({"on": True, "off": False}, "on")}, keys=[key])
    await feeder.synced()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings = proxy_env(redis_url, port, CRIVLINE_STATE_DIR=str(state))
    await start(crivline_cmd, settings, processes)
    await eventually(lambda: saved_version(state / f"{env}.json") == 1, within=20, what="v1 saved")
    second = await feeder.write(env, {"a": flag({"on": True, "off": False}, "off")})
    await eventually(lambda: saved_version(state / f"{env}.json") == second, what="v2 saved")
    stored = await feeder.redis.hget(feeder.keyspace.environment(env), ks.F_FLAGSET)
    text = (state / f"{env}.json").read_text()
    assert key.edge.key_hash in text
    assert key.secret not in text  # keys as hashes only
    await stop(processes[0])

    await asyncio.to_thread(valkey.stop)
    try:
        await start(crivline_cmd, settings, processes)
        _status, headers, body = await eventually(
            lambda: _status_is(fetch(url, key), 200), within=20, what="served from disk"
        )
        assert headers["Crivline-Version"] == str(second)
        assert "Crivline-Stale" in headers
        assert body == stored  # the same bytes Redis held
        report = await readyz(url)
        assert report["status"] == "degraded"
        assert report["ready"] is True
        assert report["redis"] == "down"
    finally:
        await asyncio.to_thread(valkey.start)

    # syncd fills the (restarted, empty) Redis: the proxy moves to live data.
    await feeder.redis.flushall()
    third = await feeder.write(
        env, {"a": flag({"on": True, "off": False}, "on")}, version=second + 1
    )
    await feeder.synced()

    async def live() -> Any:
        status, headers, _ = await fetch(url, key)
        return (
            status == 200
            and headers["Crivline-Version"] == str(third)
            and ("Crivline-Stale" not in headers)
        )

    await eventually(live, within=20, what="live data from the refilled Redis")
    assert (await readyz(url))["status"] == "ready"
    await eventually(lambda: saved_version(state / f"{env}.json") == third, what="v3 saved")
    await stop(processes[1])


async def _status_is(call: Any, wanted: int) -> Any:
    result = await call
    return result if result[0] == wanted else None


async def test_export_then_bootstrap_serves_with_neither_postgres_nor_redis(
    tmp_path: Path, central: Central, database_url: str, crivline_cmd: list[str], processes: Procs
) -> None:
    await central.shop()
    await central.set_state("shop", "checkout", "prod", state="ENABLED", defaultVariant="on")
    server, _ = await central.create_key("shop", "prod", "server")
    flagset = await central.session.get(
        f"{central.url}/api/v1/projects/shop/environments/prod/flagset",
        headers={"Authorization": f"Bearer {central.token}"},
    )
    # The edge's ETags name the flag set's version (the key created last did not move it).
    expected, flags_version = await flagset.read(), flagset.headers["Crivline-Flags-Version"]
    assert int(flags_version) < int(flagset.headers["Crivline-Version"])

    base = {k: v for k, v in os.environ.items() if not k.startswith("CRIVLINE_")}
    exported = await asyncio.create_subprocess_exec(
        *crivline_cmd,
        "export",
        "--environment",
        "acme/shop/prod",
        env={**base, "CRIVLINE_DATABASE_URL": database_url},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(exported.communicate(), 30)
    assert exported.returncode == 0, err
    document = orjson.loads(out)
    assert document["format"] == FORMAT
    assert server not in out.decode()
    assert [k["hash"] for k in document["environments"][0]["keys"]] == [tokens.hex_digest(server)]
    snapshot = tmp_path / "snapshot.json"
    snapshot.write_bytes(out)

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    nowhere = f"redis://127.0.0.1:{free_port()}/0"  # no Redis, and no database URL at all
    await start(crivline_cmd, proxy_env(nowhere, port), processes, "--bootstrap", str(snapshot))
    _status, headers, body = await eventually(
        lambda: _status_is(fetch(url, server), 200), within=20, what="served from the bootstrap"
    )
    assert body == expected
    assert headers["ETag"].strip('"').split("-")[0] == flags_version
    assert "Crivline-Stale" in headers
    assert (await readyz(url))["status"] == "degraded"
    unknown = tokens.generate(tokens.SecretKind.SERVER)
    assert (await fetch(url, unknown))[0] in (401, 503)
    await stop(processes[0])


async def test_export_and_bootstrap_refuse_bad_input_in_one_line(
    tmp_path: Path, database_url: str, crivline_cmd: list[str]
) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CRIVLINE_")}

    async def run(*args: str, **env: str) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            *crivline_cmd, *args, env={**base, **env},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        _out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode is not None
        return proc.returncode, err.decode()

    code, err = await run(
        "export", "--environment", "acme/none/prod", CRIVLINE_DATABASE_URL=database_url
    )
    assert code == 1
    assert err == "crivline export: error: --environment 'acme/none/prod': no such environment\n"
    code, err = await run("export", "--environment", "prod", CRIVLINE_DATABASE_URL=database_url)
    assert code == 1
    assert "TENANT/PROJECT/ENVIRONMENT" in err
    assert "Traceback" not in err

    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "crivline-snapshot/1", "savedAt": 1, "environments": [{}]}')
    code, err = await run(
        "proxy", "--bootstrap", str(bad),
        CRIVLINE_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
        CRIVLINE_PROXY_PORT=str(free_port()),
    )  # fmt: skip
    assert code == 1
    assert f"bootstrap file {bad}: environments[0].environment: must be a non-empty string" in err
    assert "Traceback" not in err
    code, err = await run(
        "proxy", "--bootstrap", str(tmp_path / "missing.json"),
        CRIVLINE_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
        CRIVLINE_PROXY_PORT=str(free_port()),
    )  # fmt: skip
    assert code == 1
    assert "missing.json: No such file or directory" in err


async def test_a_saved_version_newer_than_redis_is_kept(
    tmp_path: Path, feeder: Feeder, start_proxy: StartProxy
) -> None:
    """Never back in version: Redis (complete, fresh) holding an older version than the
    state folder does not replace it; a newer one does."""
    from crivline.snapshot_file import environment_entry
    from proxy import appkeys
    from proxy.edge.statedir import write_environment

    env, key = new_env(), make_key("server")
    flags = {"a": flag({"on": True, "off": False}, "on")}
    await feeder.write(env, flags, keys=[key], version=5)
    stored = await feeder.redis.hgetall(feeder.keyspace.environment(env))
    redis_fields = {k.decode(): v for k, v in stored.items()}
    write_environment(tmp_path, environment_entry(redis_fields, [key.edge]), 1.0)
    await feeder.redis.flushall()
    feeder.flag_sets.clear()
    await feeder.write(env, flags, version=3)
    await feeder.synced()
    proxy = await start_proxy(state_dir=str(tmp_path))
    cache = proxy[appkeys.CACHE]
    assert cache.get(env).version == 5
    response = await proxy.get("/sdk/v1/flags", headers=key.headers)
    assert response.headers["Crivline-Version"] == "5"
    await feeder.write(env, flags, version=6)
    await proxy.loaded(env, 6)
    await eventually(lambda: saved_version(tmp_path / f"{env}.json") == 6, what="v6 saved")
