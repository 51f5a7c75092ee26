"""The parent of ``crivline proxy --workers N``: start, watch, restart, stop N workers.

Each worker is ``python -m proxy.worker`` with this process's settings in its
environment; all of them bind the same port with SO_REUSEPORT. Tickets work across
workers because they share the edge's ticket secret through Redis (or the configured
``CRIVLINE_TICKET_SECRET``).

- A worker that fails during start-up (the port is taken, a bad setting) fails the
  whole command: the others are stopped and the exit code is 1, with the reason.
- A worker that dies later is restarted, with backoff, while the others keep serving.
- SIGTERM/SIGINT is forwarded to every worker; each shuts down gracefully; the exit
  code is 0 when all of them exited 0. Stragglers are killed after a grace period.
- ``/metrics`` answers for all the workers: the supervisor creates a private (0700)
  folder, passes it down as ``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's
  multiprocess mode, :mod:`proxy.sharedmetrics`), marks each worker that exits as dead
  there (its live gauges go; its counts stay in the totals) and removes the folder when
  it stops.
- A supervisor that is killed outright (SIGKILL, the OOM killer) takes its workers with
  it: each is started with the kernel's parent-death signal (SIGTERM, Linux), so no
  orphan keeps serving the port beside the supervisor that replaces it. Its folder,
  which it had no chance to remove, is removed by the next supervisor to start on the
  machine once none of its processes is alive.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from types import FrameType

from prometheus_client.multiprocess import mark_process_dead

from crivline.logs import fields
from crivline.settings import Settings

log = logging.getLogger(__name__)

STARTUP_SECONDS = 5.0
GRACE_SECONDS = 20.0


_FOLDER_PREFIX = "crivline-proxy-metrics-"
_PR_SET_PDEATHSIG = 1  # prctl(2)


def _die_with(parent: int) -> Callable[[], None]:
    """A child's pre-exec step: SIGTERM when ``parent`` (this process) dies; and if it
    already has (between the fork and here), exit at once."""

    prctl = None
    with contextlib.suppress(OSError, AttributeError):  # Linux only; looked up before the fork
        prctl = ctypes.CDLL(None, use_errno=True).prctl

    def arm() -> None:
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:
            os._exit(1)

    return arm


class _Worker:
    def __init__(self, index: int, env: dict[str, str], metrics_dir: str) -> None:
        self.index = index
        self.env = {**env, "CRIVLINE_PROXY_WORKER": str(index)}
        self.metrics_dir = metrics_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.restarts = 0

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "proxy.worker"],
            env=self.env,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with(os.getpid()),
        )
        self.started = time.monotonic()

    def exited(self) -> None:
        """Its live gauges leave the shared metrics; its counters stay in the totals."""
        if self.proc is not None:
            mark_process_dead(self.proc.pid, self.metrics_dir)  # type: ignore[no-untyped-call]

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                pass


def supervise(settings: Settings) -> int:
    root = tempfile.gettempdir()
    sweep_orphaned_folders(root)
    # 0700, ours alone; named after this process so that a successor can tell it is gone
    metrics_dir = tempfile.mkdtemp(prefix=f"{_FOLDER_PREFIX}{os.getpid()}-", dir=root)
    try:
        return _supervise(settings, metrics_dir)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def sweep_orphaned_folders(root: str) -> list[str]:
    """Remove the metrics folders of supervisors that were killed before they could:
    ours (same user), whose supervisor is gone and none of whose workers (the pids in
    the file names prometheus_client writes) is alive. Returns what it removed."""
    removed = []
    with contextlib.suppress(OSError), os.scandir(root) as entries:
        for entry in entries:
            if not entry.name.startswith(_FOLDER_PREFIX):
                continue
            owner = entry.name[len(_FOLDER_PREFIX) :].partition("-")[0]
            try:
                if not owner.isdigit() or not entry.is_dir(follow_symlinks=False):
                    continue
                if entry.stat(follow_symlinks=False).st_uid != os.getuid():
                    continue
                pids = {int(owner)} | _file_pids(entry.path)
            except OSError:
                continue
            if any(_alive(pid) for pid in pids):
                continue
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(entry.path)
    if removed:
        log.info("removed metrics folders of stopped proxies", extra=fields(folders=removed))
    return removed


def _file_pids(folder: str) -> set[int]:
    """The pids in prometheus_client's file names (``counter_1234.db``,
    ``gauge_livesum_1234.db``)."""
    pids = set()
    for name in os.listdir(folder):
        tail = name.removesuffix(".db").rpartition("_")[2]
        if tail.isdigit():
            pids.add(int(tail))
    return pids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    try:  # a zombie (exited, not yet reaped: a container's init may never reap it) is gone
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rpartition(b")")[2].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def _supervise(settings: Settings, metrics_dir: str) -> int:
    env = {
        **os.environ,
        **settings.environ(),
        "CRIVLINE_PROXY_WORKERS": "1",
        "PROMETHEUS_MULTIPROC_DIR": metrics_dir,
    }
    workers = [_Worker(i, env, metrics_dir) for i in range(settings.proxy_workers)]
    stopping = False

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        for worker in workers:
            worker.start()
        log.info(
            "proxy workers started",
            extra=fields(workers=len(workers), port=settings.proxy_port),
        )
        failed = _watch(workers, lambda: stopping)
        for worker in workers:
            worker.signal(signal.SIGTERM)
        codes = _reap(workers)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if failed is not None:
        print(f"crivline proxy: error: {failed}", file=sys.stderr)
        return 1
    return 0 if all(code == 0 for code in codes) else 1


def _watch(workers: list[_Worker], stopping: Callable[[], bool]) -> str | None:
    """Until a stop signal; returns why the command failed, or None."""
    while not stopping():
        for worker in workers:
            proc = worker.proc
            if proc is None or proc.poll() is None:
                continue
            code = proc.returncode
            worker.exited()
            if stopping():
                break
            if time.monotonic() - worker.started < STARTUP_SECONDS and worker.restarts == 0:
                return f"worker {worker.index} exited during start-up with code {code}"
            worker.restarts += 1
            delay = min(10.0, 0.5 * 2 ** min(worker.restarts, 5))
            log.warning(
                "worker died; restarting",
                extra=fields(worker=worker.index, code=code, in_seconds=delay),
            )
            deadline = time.monotonic() + delay
            while time.monotonic() < deadline and not stopping():
                time.sleep(0.05)
            if not stopping():
                worker.start()
        time.sleep(0.1)
    return None


def _reap(workers: list[_Worker]) -> list[int]:
    deadline = time.monotonic() + GRACE_SECONDS
    codes: list[int] = []
    for worker in workers:
        proc = worker.proc
        if proc is None:
            continue
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("worker did not stop in time; killing", extra=fields(worker=worker.index))
            proc.kill()
            proc.wait()
        # A worker still starting when SIGTERM came had no handler yet: the signal's
        # default action ended it, which is a clean stop too.
        worker.exited()
        codes.append(0 if proc.returncode == -signal.SIGTERM else proc.returncode)
    return codes
