"""This proxy's environments on local disk (``CRIVLINE_STATE_DIR``), to start without upstream.

After each version it applies from Redis the proxy notes the environment here; a writer
task saves what was noted at most once per ``state_write_seconds`` (a burst of versions
is one write, of the newest), off the event loop. Each environment is one file,
``<environment id>.json`` in the :mod:`crivline.snapshot_file` format, its keys as
hashes only. A write is atomic — a temporary file beside it, fsync, rename, fsync of the
folder — so a crash leaves the old file or the new one, never half of either.

Several processes of one edge may share the folder (``--workers``, or proxies on one
host): each write holds an exclusive ``flock`` on ``<environment id>.lock`` and replaces
the file only when its version is newer than the one there, so a process that is
behind never puts an older file over a newer one. An environment that leaves the edge
(a complete Redis no longer serves it) loses its file the same way.

At start-up :func:`load_dir` reads every file (one that cannot be read is logged and
skipped: the state folder is a cache, never a reason not to start).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import re
import secrets
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from crivline.errors import SnapshotFileError, StartupError
from crivline.logs import describe, fields
from crivline.snapshot import EdgeKey
from crivline.snapshot_file import StoredEnvironment, decode, encode, environment_entry
from crivline.tasks import Tasks

log = logging.getLogger(__name__)

_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")

KeysOf = Callable[[str], Sequence[EdgeKey]]


def file_name(env: str) -> str:
    if not _SAFE.fullmatch(env):
        raise ValueError(f"not an environment id fit for a file name: {env!r}")
    return f"{env}.json"


@contextlib.contextmanager
def _locked(folder: Path, env: str) -> Iterator[None]:
    fd = os.open(folder / f"{env}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _version_on_disk(path: Path) -> int:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return 0
    try:
        stored = decode(raw, str(path))
    except SnapshotFileError:
        return 0  # unreadable: anything is better
    return max((e.version for e in stored), default=0)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_environment(folder: Path, entry: Mapping[str, Any], saved_at: float) -> bool:
    """Save one environment unless the folder holds the same version or a newer one;
    True if the file was written."""
    env = str(entry["environment"])
    path = folder / file_name(env)
    with _locked(folder, env):
        if _version_on_disk(path) >= int(entry["version"]):
            return False
        tmp = folder / f".{env}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        try:
            with open(tmp, "wb") as out:
                out.write(encode([entry], saved_at))
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        _fsync_dir(folder)
    return True


def remove_environment(folder: Path, env: str) -> None:
    with _locked(folder, env), contextlib.suppress(FileNotFoundError):
        (folder / file_name(env)).unlink()
        _fsync_dir(folder)


def load_dir(folder: Path) -> list[StoredEnvironment]:
    """Every environment saved in ``folder`` (unreadable files are logged and skipped)."""
    out: list[StoredEnvironment] = []
    try:
        paths = sorted(folder.glob("*.json"))
    except OSError as exc:
        log.warning(
            "state directory unreadable", extra=fields(path=str(folder), error=describe(exc))
        )
        return out
    for path in paths:
        try:
            out.extend(decode(path.read_bytes(), str(path)))
        except (OSError, SnapshotFileError) as exc:
            log.warning("state file skipped", extra=fields(path=str(path), error=describe(exc)))
    return out


class StateDir:
    """Notes applied versions (a dict write, on the event loop) and saves them in the
    background, debounced; :meth:`close` saves what is still noted."""

    def __init__(self, folder: Path, keys_of: KeysOf, *, every: float) -> None:
        self.folder = folder
        self._keys_of = keys_of
        self._every = every
        self._noted: dict[str, Mapping[str, bytes] | None] = {}  # None: remove the file
        self._wake = asyncio.Event()
        self._tasks = Tasks("statedir")
        self.writes = 0

    def prepare(self) -> None:
        """Create the folder (mode 0700): a folder that cannot be made stops start-up."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            probe = self.folder / f".probe.{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise StartupError(
                f"CRIVLINE_STATE_DIR {self.folder} is not a writable folder: {exc.strerror or exc}"
            ) from None

    def start(self) -> None:
        self._tasks.spawn(self._run(), "write")

    def applied(self, env: str, redis_fields: Mapping[str, bytes]) -> None:
        self._noted[env] = redis_fields
        self._wake.set()

    def removed(self, env: str) -> None:
        self._noted[env] = None
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(self._every)  # the debounce: what a burst noted is one write
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        noted, self._noted = self._noted, {}
        if not noted:
            return
        work: list[tuple[str, dict[str, Any] | None]] = []
        for env, redis_fields in noted.items():
            if redis_fields is None:
                work.append((env, None))
            else:
                work.append((env, environment_entry(redis_fields, self._keys_of(env))))
        await asyncio.to_thread(self._save, work, time.time())

    def _save(self, work: Sequence[tuple[str, dict[str, Any] | None]], now: float) -> None:
        for env, entry in work:
            try:
                if entry is None:
                    remove_environment(self.folder, env)
                elif write_environment(self.folder, entry, now):
                    self.writes += 1
            except (OSError, ValueError) as exc:
                log.warning(
                    "state file not written",
                    extra=fields(environment=env, path=str(self.folder), error=describe(exc)),
                )

    async def close(self) -> None:
        await self._tasks.close()
        await self.flush()
