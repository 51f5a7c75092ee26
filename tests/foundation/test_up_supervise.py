"""``crivline up`` watches what it started: a dead embedded server comes back on the same
port and data, a server that keeps dying stops the stack with a clear message, and a
start-up failure names its real cause. Real processes, real servers."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import orjson
import pytest
from support.waiting import eventually
from test_cli import _reap, _start_up, _up_env, _wait_for_stack, stack_dir

from crivline.embedded import PostgresServer, free_port
from crivline.errors import StartupError

__all__ = ["stack_dir"]  # the fixture, shared with test_cli


def _pids(data_dir: Path) -> dict[str, int]:
    recorded = orjson.loads((data_dir / "pids.json").read_bytes())
    return {name: int(entry["pid"]) for name, entry in recorded.items()}


def _status(url: str, headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def _wait(condition: object, within: float, what: str) -> object:
    assert callable(condition)
    return asyncio.run(eventually(condition, within, what, every=0.1))


def _restarted(data_dir: Path, name: str, old: int) -> int | None:
    pid = _pids(data_dir).get(name)
    return pid if pid is not None and pid != old else None


def _gone(pid: int) -> bool:
    """Not even a <defunct> entry: the process was reaped by its parent."""
    return not Path(f"/proc/{pid}").exists()


@pytest.mark.timeout(240)
def test_up_restarts_dead_embedded_servers_on_the_same_port(
    crivline_cmd: list[str], stack_dir: Path
) -> None:
    proc = _start_up(crivline_cmd, stack_dir, _up_env())
    try:
        stack = _wait_for_stack(proc, stack_dir)
        proxy, syncd = stack["parts"]["proxy"]["url"], stack["parts"]["syncd"]["url"]
        key = stack["demo"]["keys"]["development"]["server"]
        flags = f"{proxy}/sdk/v1/flags"
        auth = {"Authorization": f"Bearer {key}"}
        _wait(lambda: _status(flags, auth) == 200, 30, "the proxy to serve the demo flags")

        # Valkey, the way an operator stops it; then PostgreSQL's postmaster, the hard way.
        for name, sig in (("valkey", signal.SIGTERM), ("postgres", signal.SIGKILL)):
            old = _pids(stack_dir)[name]
            os.kill(old, sig)
            _wait(lambda n=name, o=old: _restarted(stack_dir, n, o), 60, f"{name} restarted")
            _wait(lambda o=old: _gone(o), 10, f"the dead {name} reaped")
            _wait(lambda: _status(f"{syncd}/readyz") == 200, 60, f"syncd ready after {name}")
            _wait(lambda: _status(flags, auth) == 200, 30, f"the flags served after {name}")

        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out
        assert "embedded Valkey (port" in out
        assert "exited (exit code 0)" in out  # SIGTERM: Valkey shut down cleanly
        assert "exited (killed by SIGKILL)" in out
        assert "restarting embedded PostgreSQL" in out
        assert "Valkey is back on port" in out
        assert "PostgreSQL is back on port" in out
        assert "Traceback" not in out
    finally:
        _reap(proc)


@pytest.mark.timeout(180)
def test_up_gives_up_on_a_server_that_keeps_dying(crivline_cmd: list[str], stack_dir: Path) -> None:
    proc = _start_up(crivline_cmd, stack_dir, _up_env())
    try:
        _wait_for_stack(proc, stack_dir)
        pid = _pids(stack_dir)["valkey"]
        for _ in range(5):  # five restarts are allowed within a minute…
            os.kill(pid, signal.SIGKILL)
            new = _wait(lambda o=pid: _restarted(stack_dir, "valkey", o), 30, "valkey restarted")
            assert isinstance(new, int)
            pid = new
        os.kill(pid, signal.SIGKILL)  # …and a sixth death stops the stack
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 1, out
        last = out.strip().splitlines()[-2:]
        assert any("keeps exiting (5 restarts within 60s); stopping the stack" in x for x in last)
        assert "Traceback" not in out
        assert all(_gone(p) for p in _pids(stack_dir).values())
    finally:
        _reap(proc)


@pytest.mark.timeout(120)
def test_a_stale_postmaster_lock_is_named_as_the_cause(stack_dir: Path) -> None:
    server = PostgresServer(stack_dir / "postgres", free_port())
    server.start()
    server.kill()  # a crash: postmaster.pid stays behind
    lock = server.cluster / "postmaster.pid"
    assert lock.exists()
    # Its pid now belongs to another process of PostgreSQL's user (pid reuse after a reboot).
    holder = subprocess.Popen(["sleep", "120"], **server._run_as())  # type: ignore[call-overload]
    try:
        lines = lock.read_text().split("\n")
        lock.write_text("\n".join([str(holder.pid), *lines[1:]]))
        with pytest.raises(StartupError) as failure:
            server.start(timeout=20)
        message = str(failure.value)
        assert "PostgreSQL exited during start-up (exit code 1)" in message
        assert f"a stale lock: {lock} names pid {holder.pid}" in message
        assert "'sleep 120'" in message
        assert f"delete {lock}" in message
        assert "\n" not in message
        lock.unlink()  # as the message says
        server.start()
        assert server.running()
    finally:
        holder.kill()
        holder.wait()
        server.stop()
