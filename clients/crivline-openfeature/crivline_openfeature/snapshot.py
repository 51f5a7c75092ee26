"""The snapshot file: the last flag set on disk, for a cold start without the edge.

``{"version": N, "flagSet": {flagd document}}``, written atomically (a temporary file
in the same folder, then a rename) after every change the provider applies. A plain
flagd document (``curl …/sdk/v1/flags > file``) is read too, as version 0, so any
version from the edge replaces it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import orjson

from crivline_openfeature.errors import BadFlagSet


def read(path: Path) -> tuple[int, dict[str, Any]] | None:
    """(version, flag set) from the file; None when there is no file."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BadFlagSet(f"snapshot {path} cannot be read: {exc}") from None
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadFlagSet(f"snapshot {path} is not JSON: {exc}") from None
    if isinstance(doc, dict) and "flagSet" in doc:
        version, flag_set = doc.get("version"), doc.get("flagSet")
        if type(version) is not int or version < 0 or not isinstance(flag_set, dict):
            raise BadFlagSet(f"snapshot {path} needs an integer version and a flagSet object")
        return version, flag_set
    if isinstance(doc, dict) and isinstance(doc.get("flags"), dict):
        return 0, doc
    raise BadFlagSet(f"snapshot {path} is neither a snapshot nor a flagd document")


def write(path: Path, version: int, flag_set: Any) -> None:
    body = orjson.dumps({"version": version, "flagSet": flag_set})
    folder = path.parent
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=folder)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(body)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
