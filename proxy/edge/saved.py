"""Starting from files: the state folder and ``--bootstrap`` snapshots, before Redis speaks.

:func:`read_saved` reads them when the app is created — a bootstrap file the operator
named that cannot be read stops start-up with one line naming it and what is wrong; a
state file that cannot be read is skipped (see :mod:`proxy.edge.statedir`). Of every
environment the newest version wins. :func:`serve_saved` puts them in the cache and
their keys in the key index, and marks the process as serving saved data: degraded,
``Crivline-Stale`` counting from when the files were last known current. Redis's
versions replace them as syncd writes them; an older one never does.
"""

from __future__ import annotations

import logging
from pathlib import Path

from crivline.errors import SnapshotFileError
from crivline.logs import describe, fields
from crivline.settings import Settings
from crivline.snapshot_file import StoredEnvironment, decode
from proxy.edge.environments import EnvironmentCache, build_state
from proxy.edge.keys import KeyIndex
from proxy.edge.statedir import load_dir
from proxy.edge.status import EdgeStatus

log = logging.getLogger(__name__)


def read_bootstrap(path: Path) -> list[StoredEnvironment]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SnapshotFileError(f"bootstrap file {path}: {exc.strerror or exc}") from None
    return decode(raw, f"bootstrap file {path}")


def read_saved(settings: Settings) -> list[StoredEnvironment]:
    """The newest saved version of each environment, from the state folder and the
    bootstrap files."""
    found: list[StoredEnvironment] = []
    for path in settings.bootstrap.paths:
        found.extend(read_bootstrap(path))
    if settings.state_dir is not None and settings.state_dir.is_dir():
        found.extend(load_dir(settings.state_dir))
    newest: dict[str, StoredEnvironment] = {}
    for stored in found:
        held = newest.get(stored.environment_id)
        if held is None or stored.version > held.version:
            newest[stored.environment_id] = stored
    return list(newest.values())


def serve_saved(
    saved: list[StoredEnvironment],
    cache: EnvironmentCache,
    keys: KeyIndex,
    status: EdgeStatus,
) -> int:
    """Serve ``saved`` until Redis has newer; returns how many environments it serves."""
    served = 0
    for stored in saved:
        try:
            state = build_state(stored.fields, now=stored.saved_at)
        except Exception as exc:  # a flag set this build cannot compile: skip, say which
            log.warning(
                "saved environment skipped",
                extra=fields(environment=stored.environment_id, error=describe(exc)),
            )
            continue
        if cache.seed(state):
            keys.seed(stored.environment_id, stored.project_id, stored.tenant_id, stored.keys)
            served += 1
    if served:
        status.serving_saved(min(s.saved_at for s in saved))
        log.info(
            "serving saved environments until the edge's Redis has them",
            extra=fields(environments=served),
        )
    return served
