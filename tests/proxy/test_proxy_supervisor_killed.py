"""A killed ``crivline proxy --workers 2`` supervisor leaves nothing behind: its workers
stop with it (no orphan keeps serving the port), and the next supervisor to start
removes the metrics folder the killed one could not.

Real processes: two supervisors in turn, their workers, the test Valkey. ``TMPDIR`` is
the test's own folder, so the sweep sees only what this test made.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from support.proxyprocs import environ_of, proxy_env, start_workers
from support.waiting import eventually

from crivline.embedded import free_port


def _children(pid: int) -> set[int]:
    raw = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return {int(p) for p in raw.split()}


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's exit may never be reaped in a container)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except FileNotFoundError:
        return False
    return stat.rpartition(b")")[2].split()[0] != b"Z"


async def test_workers_stop_with_a_killed_supervisor_and_its_folder_is_swept(
    tmp_path: Path,
    redis_url: str,
    crivline_cmd: list[str],
    processes: list[asyncio.subprocess.Process],
) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    settings = proxy_env(redis_url, free_port(), TMPDIR=str(scratch))
    first = await start_workers(crivline_cmd, settings, tmp_path / "first.log", processes)
    workers = _children(first.pid)
    assert len(workers) == 2
    folders = {environ_of(pid)["PROMETHEUS_MULTIPROC_DIR"] for pid in workers}
    assert len(folders) == 1
    folder = Path(folders.pop())
    assert _listing(scratch) == [folder.name]

    first.kill()  # SIGKILL: the supervisor runs no clean-up of its own
    await first.wait()
    await eventually(
        lambda: not any(_running(pid) for pid in workers),
        within=30,
        what="the workers to stop with their supervisor",
    )
    assert _listing(scratch) == [folder.name]  # nobody was left to remove it

    settings = proxy_env(redis_url, free_port(), TMPDIR=str(scratch))
    second = await start_workers(crivline_cmd, settings, tmp_path / "second.log", processes)
    kept = _listing(scratch)  # the killed one's folder is gone; its own is there
    assert [name.split("-")[3] for name in kept] == [str(second.pid)]
    second.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(second.wait(), 30) == 0
    assert _listing(scratch) == []  # a clean stop removes its own
