"""Environments in a file: what ``crivline export`` writes, ``crivline proxy --bootstrap``
serves and each proxy keeps in ``CRIVLINE_STATE_DIR``.

One JSON document, the same shape everywhere::

    {"format": "crivline-snapshot/1", "savedAt": 1771622898.25,
     "environments": [{"environment": uuid, "environmentKey": slug,
                       "project": uuid, "projectKey": slug,
                       "tenant": uuid, "tenantKey": slug,
                       "version": 12, "flagsVersion": 11, "committedAt": epoch seconds,
                       "flagSet": {…the flagd document…},
                       "keys": [{"hash": hex SHA-256, "id": uuid, "kind": "server",
                                 "expiresAt": epoch seconds | null}]}]}

``flagsVersion`` is the flag set's version (what SDKs are shown; below ``version`` when
the last writes changed only keys or the plan); a file without it (from an older
release) means ``version``. Keys are their SHA-256 hashes only: a file gives nobody a
usable key. ``savedAt`` is when the content was last known current (the export, or the
proxy's write), which is what a proxy serving it reports as its staleness. The flag set
is stored as an object and serialised back canonically (sorted keys), the bytes syncd
writes to Redis.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from crivline import keyspace as ks
from crivline.errors import SnapshotFileError
from crivline.snapshot import EdgeKey, EnvironmentSnapshot, serialize_flag_set

FORMAT = "crivline-snapshot/1"
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class StoredEnvironment:
    """One environment of a snapshot file, ready to serve."""

    fields: dict[str, bytes]  # as the edge Redis hash holds it (keyspace ``F_*``)
    keys: tuple[EdgeKey, ...]
    saved_at: float

    @property
    def environment_id(self) -> str:
        return self.fields[ks.F_ENVIRONMENT].decode()

    @property
    def version(self) -> int:
        return int(self.fields[ks.F_VERSION])

    @property
    def tenant_id(self) -> str:
        return self.fields[ks.F_TENANT].decode()

    @property
    def project_id(self) -> str:
        return self.fields[ks.F_PROJECT].decode()


def _text(fields: Mapping[str, bytes], name: str) -> str:
    value = fields.get(name)
    return value.decode() if value is not None else ""


def _number(fields: Mapping[str, bytes], name: str) -> float:
    value = fields.get(name)
    return float(value) if value else 0.0


def environment_entry(fields: Mapping[str, bytes], keys: Sequence[EdgeKey]) -> dict[str, Any]:
    """The file's entry for an environment from its Redis hash fields and live keys."""
    return {
        "environment": _text(fields, ks.F_ENVIRONMENT),
        "environmentKey": _text(fields, ks.F_ENVIRONMENT_KEY),
        "project": _text(fields, ks.F_PROJECT),
        "projectKey": _text(fields, ks.F_PROJECT_KEY),
        "tenant": _text(fields, ks.F_TENANT),
        "tenantKey": _text(fields, ks.F_TENANT_KEY),
        "version": int(fields[ks.F_VERSION]),
        **({"flagsVersion": int(flags)} if (flags := fields.get(ks.F_FLAGS_VERSION)) else {}),
        "committedAt": _number(fields, ks.F_COMMITTED_AT),
        "flagSet": orjson.loads(fields[ks.F_FLAGSET]),
        "keys": [
            {"hash": k.key_hash, "id": k.id, "kind": k.kind, "expiresAt": k.expires_at}
            for k in sorted(keys, key=lambda k: k.key_hash)
        ],
    }


def snapshot_entry(snapshot: EnvironmentSnapshot, committed_at: float) -> dict[str, Any]:
    """The file's entry for an environment read from Postgres."""
    fields = {
        ks.F_ENVIRONMENT: snapshot.environment_id.encode(),
        ks.F_ENVIRONMENT_KEY: snapshot.environment_key.encode(),
        ks.F_PROJECT: snapshot.project_id.encode(),
        ks.F_PROJECT_KEY: snapshot.project_key.encode(),
        ks.F_TENANT: snapshot.tenant_id.encode(),
        ks.F_TENANT_KEY: snapshot.tenant_key.encode(),
        ks.F_VERSION: str(snapshot.version).encode(),
        ks.F_FLAGS_VERSION: str(snapshot.served_version).encode(),
        ks.F_COMMITTED_AT: repr(committed_at).encode(),
        ks.F_FLAGSET: snapshot.flag_set_bytes(),
    }
    return environment_entry(fields, snapshot.keys)


def encode(entries: Sequence[Mapping[str, Any]], saved_at: float) -> bytes:
    document = {"format": FORMAT, "savedAt": saved_at, "environments": list(entries)}
    return orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n"


def _require(cond: bool, source: str, where: str, what: str) -> None:
    if not cond:
        raise SnapshotFileError(f"{source}: {where}: {what}")


def _string(value: Any) -> bool:
    return isinstance(value, str) and value != ""


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _key(raw: Any, source: str, where: str) -> EdgeKey:
    _require(isinstance(raw, dict), source, where, "must be an object")
    digest = raw.get("hash")
    _require(
        isinstance(digest, str) and _HEX64.fullmatch(digest) is not None,
        source,
        f"{where}.hash",
        "must be the key's SHA-256 as 64 lowercase hex digits (files never hold keys)",
    )
    _require(_string(raw.get("id")), source, f"{where}.id", "must be a non-empty string")
    _require(
        raw.get("kind") in ("server", "client"), source, f"{where}.kind", "must be server or client"
    )
    expires = raw.get("expiresAt")
    _require(
        expires is None or _finite(expires),
        source,
        f"{where}.expiresAt",
        "must be a number or null",
    )
    return EdgeKey(digest, raw["id"], raw["kind"], float(expires) if expires is not None else None)


def _environment(raw: Any, source: str, where: str, saved_at: float) -> StoredEnvironment:
    _require(isinstance(raw, dict), source, where, "must be an object")
    for name in ("environment", "project", "tenant"):
        _require(_string(raw.get(name)), source, f"{where}.{name}", "must be a non-empty string")
    version = raw.get("version")
    _require(
        isinstance(version, int) and not isinstance(version, bool) and version > 0,
        source,
        f"{where}.version",
        "must be a whole number above 0",
    )
    flags_version = raw.get("flagsVersion")
    _require(
        flags_version is None
        or (
            isinstance(flags_version, int)
            and not isinstance(flags_version, bool)
            and 0 < flags_version <= version
        ),
        source,
        f"{where}.flagsVersion",
        "must be a whole number above 0, at most the version",
    )
    committed = raw.get("committedAt", 0)
    _require(_finite(committed), source, f"{where}.committedAt", "must be a number")
    flag_set = raw.get("flagSet")
    _require(
        isinstance(flag_set, dict) and isinstance(flag_set.get("flags"), dict),
        source,
        f"{where}.flagSet",
        "must be a flagd document (an object with flags)",
    )
    keys = raw.get("keys", [])
    _require(isinstance(keys, list), source, f"{where}.keys", "must be a list")
    fields = {
        ks.F_ENVIRONMENT: raw["environment"].encode(),
        ks.F_ENVIRONMENT_KEY: str(raw.get("environmentKey") or "").encode(),
        ks.F_PROJECT: raw["project"].encode(),
        ks.F_PROJECT_KEY: str(raw.get("projectKey") or "").encode(),
        ks.F_TENANT: raw["tenant"].encode(),
        ks.F_TENANT_KEY: str(raw.get("tenantKey") or "").encode(),
        ks.F_VERSION: str(version).encode(),
        ks.F_COMMITTED_AT: repr(float(committed)).encode(),
        ks.F_FLAGSET: serialize_flag_set(flag_set),
    }
    if flags_version is not None:  # else an older file: the version is the flag set's
        fields[ks.F_FLAGS_VERSION] = str(flags_version).encode()
    parsed = tuple(_key(k, source, f"{where}.keys[{i}]") for i, k in enumerate(keys))
    return StoredEnvironment(fields, parsed, saved_at)


def decode(raw: bytes, source: str) -> list[StoredEnvironment]:
    """The environments of a snapshot file; :class:`SnapshotFileError` names what is wrong."""
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise SnapshotFileError(f"{source}: not JSON ({exc})") from None
    _require(isinstance(document, dict), source, "the document", "must be a JSON object")
    _require(
        document.get("format") == FORMAT,
        source,
        "format",
        f"must be {FORMAT!r} (a file from crivline export or a proxy's state directory)",
    )
    saved_at = document.get("savedAt")
    _require(_finite(saved_at), source, "savedAt", "must be a number (epoch seconds)")
    environments = document.get("environments")
    _require(isinstance(environments, list), source, "environments", "must be a list")
    return [
        _environment(e, source, f"environments[{i}]", float(saved_at))
        for i, e in enumerate(environments)
    ]
