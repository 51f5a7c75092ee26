"""The state folder's writer, without servers: atomic, version-guarded, debounced, and
safe for several processes sharing one folder."""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import orjson
import pytest
from support.waiting import eventually

from crivline import keyspace as ks
from crivline.errors import SnapshotFileError, StartupError
from crivline.snapshot import EdgeKey
from crivline.snapshot_file import decode, environment_entry
from proxy.edge.statedir import StateDir, load_dir, write_environment

ENV = "00000000-0000-4000-8000-0000000000e1"
KEY = EdgeKey("ab" * 32, "k1", "server", None)


def redis_fields(version: int, env: str = ENV) -> dict[str, bytes]:
    flag_set = {"flags": {"f": {"state": "ENABLED", "variants": {"v": version},
                                "defaultVariant": "v"}}}  # fmt: skip
    return {
        ks.F_ENVIRONMENT: env.encode(),
        ks.F_ENVIRONMENT_KEY: b"production",
        ks.F_PROJECT: b"p",
        ks.F_PROJECT_KEY: b"app",
        ks.F_TENANT: b"t",
        ks.F_TENANT_KEY: b"acme",
        ks.F_VERSION: str(version).encode(),
        ks.F_COMMITTED_AT: b"1771622898.25",
        ks.F_FLAGSET: orjson.dumps(flag_set, option=orjson.OPT_SORT_KEYS),
    }


def on_disk(folder: Path, env: str = ENV) -> int:
    return decode((folder / f"{env}.json").read_bytes(), "test")[0].version


def test_an_older_version_never_replaces_a_newer_file(tmp_path: Path) -> None:
    assert write_environment(tmp_path, environment_entry(redis_fields(5), [KEY]), 10.0)
    assert not write_environment(tmp_path, environment_entry(redis_fields(3), [KEY]), 11.0)
    assert not write_environment(tmp_path, environment_entry(redis_fields(5), [KEY]), 12.0)
    assert on_disk(tmp_path) == 5
    (stored,) = load_dir(tmp_path)
    assert stored.fields == {**redis_fields(5)}  # the bytes Redis held, back
    assert stored.keys == (KEY,)
    assert stored.saved_at == 10.0
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_a_flag_set_version_goes_to_the_file_and_back(tmp_path: Path) -> None:
    """A state file keeps the flag set's version Redis held, so a proxy started from it
    names the ETag every edge names; a file without one (an older release) means the
    version, and one that names a flag set newer than its version is refused."""
    held = {**redis_fields(7), ks.F_FLAGS_VERSION: b"5"}
    entry = environment_entry(held, [KEY])
    assert entry["flagsVersion"] == 5
    assert write_environment(tmp_path, entry, 1.0)
    (stored,) = load_dir(tmp_path)
    assert stored.fields == held
    assert "flagsVersion" not in environment_entry(redis_fields(7), [KEY])
    document = {"format": "crivline-snapshot/1", "savedAt": 1.0, "environments": [entry]}
    for bad in (8, 0, "5", True):
        entry["flagsVersion"] = bad
        with pytest.raises(SnapshotFileError, match=r"environments\[0\]\.flagsVersion: must be"):
            decode(orjson.dumps(document), "x.json")


def _write_versions(folder: str, versions: list[int]) -> None:
    for v in versions:
        write_environment(Path(folder), environment_entry(redis_fields(v), [KEY]), float(v))


def test_processes_sharing_the_folder_leave_the_newest_version(tmp_path: Path) -> None:
    # Four processes write interleaved versions of one environment, each in its own order.
    plans = [
        list(range(i, 121, 4))[::-1] if i % 2 else list(range(i, 121, 4)) for i in (1, 2, 3, 4)
    ]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(4, mp_context=context) as pool:
        for future in [pool.submit(_write_versions, str(tmp_path), p) for p in plans]:
            future.result()
    assert on_disk(tmp_path) == 120


def test_unreadable_state_files_are_skipped_and_a_folder_that_cannot_be_made_stops_start(
    tmp_path: Path,
) -> None:
    write_environment(tmp_path, environment_entry(redis_fields(2), [KEY]), 1.0)
    (tmp_path / "broken.json").write_text("{not json")
    assert [s.version for s in load_dir(tmp_path)] == [2]
    with pytest.raises(SnapshotFileError, match=r"x\.json: not JSON"):
        decode(b"{", "x.json")
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StartupError, match=r"CRIVLINE_STATE_DIR .* is not a writable folder"):
        StateDir(blocker / "state", lambda _env: [], every=0.1).prepare()


async def test_a_burst_of_versions_is_one_write_of_the_newest(tmp_path: Path) -> None:
    state = StateDir(tmp_path, lambda _env: [KEY], every=0.2)
    state.prepare()
    state.start()
    try:
        for v in range(1, 21):
            state.applied(ENV, redis_fields(v))
        await eventually(lambda: state.writes == 1, what="one write")
        assert on_disk(tmp_path) == 20
        state.removed(ENV)
        await eventually(lambda: not (tmp_path / f"{ENV}.json").exists(), what="file removed")
        state.applied(ENV, redis_fields(21))
    finally:
        await state.close()  # what is still noted is saved on close
    assert on_disk(tmp_path) == 21
