"""``crivline export``: environments as snapshot files, read from the central Postgres.

Each environment is named ``TENANT/PROJECT/ENVIRONMENT`` (keys, as in the control API)
or by its id. The file is what :mod:`crivline.snapshot_file` describes — what a proxy
serves with ``--bootstrap`` when nothing newer is there (air-gapped and
disaster-recovery installs); its keys are SHA-256 hashes only. Each environment is read
in one repeatable-read transaction (:func:`crivline.snapshot.load_snapshot`), so its
version, flag set and keys belong together.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import asyncpg

from crivline.envnames import FORM, find_environment, well_formed
from crivline.errors import CrivlineError
from crivline.snapshot import load_snapshot
from crivline.snapshot_file import encode, snapshot_entry


class ExportError(CrivlineError):
    """An environment to export does not exist or is named wrongly."""


async def _environment_id(conn: asyncpg.Connection, name: str) -> str:
    if not well_formed(name):
        raise ExportError(f"--environment {name!r}: name it {FORM}")
    found = await find_environment(conn, name)
    if found is None:
        raise ExportError(f"--environment {name!r}: no such environment")
    return found


async def export(conn: asyncpg.Connection, names: Sequence[str]) -> bytes:
    """The snapshot file of the environments ``names`` (the connection needs the JSON
    codecs of :func:`crivline.snapshot.set_json_codecs`)."""
    entries: list[dict[str, Any]] = []
    seen: set[str] = set()
    for name in names:
        env = await _environment_id(conn, name)
        if env in seen:
            continue
        seen.add(env)
        snapshot = await load_snapshot(conn, env)
        if snapshot is None:
            raise ExportError(f"--environment {name!r}: deleted while exporting")
        entries.append(snapshot_entry(snapshot, committed_at=0.0))
    return encode(entries, saved_at=time.time())
