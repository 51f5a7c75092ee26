"""Every Redis name Crivline uses, in one place: the contract between syncd and proxy.

All names start with a configurable prefix (``CRIVLINE_KEY_PREFIX``, default
``crivline:``). Everything here can be rebuilt from the central Postgres; an edge whose
Redis is flushed heals by itself (syncd notices the missing epoch and resyncs).

Per environment (``env`` is the environment's uuid):

``{p}env:{env}``  hash — the environment as served, always written whole and atomically:
    ``version``       the replication clock (environments.version), decimal
    ``flagset``       the flag set, canonical flagd JSON bytes (sorted keys)
    ``tenant``, ``project``, ``environment``   ids (uuids)
    ``tenant_key``, ``project_key``, ``environment_key``   slugs
    ``committed_at``  epoch seconds of the change in Postgres (for propagation lag)
    ``applied_at``    epoch seconds when syncd wrote it

``{p}env:{env}:deltas``  stream, capped — one entry per applied version, fields:
    ``v``     the version this entry brings the environment to
    ``base``  the version it was computed against (the one before it in Redis)
    ``delta`` JSON ``{"flags": {key: definition}, "removed": [key…],
              "evaluators": {name: fragment}, "removedEvaluators": [name…]}``, plus
              ``"metadata"`` (the new top-level flag-set metadata, whole) only when that
              changed; applied to the flag set of version ``base`` it gives that of ``v``
              (an entry may be empty: a version that changed only keys)
    ``at``    commit time, epoch seconds
    A stream client resuming from version X is sent the entries after X only if they form
    an unbroken chain (the first one's ``base`` is X, each next ``base`` is the previous
    ``v``); otherwise it gets the full flag set. ``base`` differs from the previous ``v``
    when a writer found an unexpected version in Redis (another syncd, a flush).

``{p}env:{env}:keys``  set — hex SHA-256 of each live API key of the environment.

``{p}key:{sha256}``  hash — one live API key:
    ``environment``, ``project``, ``tenant`` (uuids), ``kind`` (server|client),
    ``id`` (the key's uuid), ``expires_at`` (epoch seconds, or empty for never); a key
    with an expiry also carries it as the hash's TTL, so Redis drops it on time.

Per edge (``edge`` is ``CRIVLINE_EDGE_ID``):

``{p}edge:{edge}:environments``  set — ids of the environments this edge serves.
``{p}edge:{edge}:sync``  hash — ``epoch`` (random, written at full sync: its absence
    means Redis lost our data), ``full_sync_at``, ``reconciled_at`` (epoch seconds), and
    ``pending:{token}`` fields while a full sync runs (the epoch is only written if its
    marker survived, i.e. Redis lost nothing meanwhile). This edge's data is complete
    and fresh while ``epoch`` exists and ``reconciled_at`` is recent (a few reconcile
    intervals). A new ``epoch`` value means Redis was rebuilt from empty. With the last
    reconciliation: ``reconciled_started`` (when it began, by this Redis server's
    ``TIME``, before it read Postgres) and ``reconciled_behind`` (the environment ids it
    found older here than in Postgres, comma-separated; ``*``: more than 100) — a
    full sync removes both.
``{p}edge:{edge}:heartbeat``  string with a TTL — syncd is alive while it exists; JSON
    ``{"pid", "host", "started_at", "at", "epoch", "ready", "scope"}`` of the syncd that
    wrote it last (several syncd at one edge share it).
``{p}edge:{edge}:ticket-secret``  string — the proxies' shared secret for signing browser
    stream tickets when ``CRIVLINE_TICKET_SECRET`` is unset (the first proxy sets it with
    NX, every other process at the edge adopts it; a flush just makes them pick a new one).
``{p}ratelimit:{key_id}:{second}``  string with a TTL — requests of one API key in one
    epoch second, summed over every proxy process (each adds its local count in batches).

Usage (the one flow from the edge to the centre; see ``crivline/usage.py``):

``{p}edge:{edge}:plans``  hash — tenant id → ``{revision}|{plan JSON}``: the plan
    limits the edge enforces for each tenant it serves (see
    :class:`crivline.plans.EdgePlan`); written by syncd before it applies an environment
    of the tenant, never replaced by an older revision; read by the proxies.
``{p}edge:{edge}:usage``  hash — counts not yet handed to syncd, field
    ``{env}|{YYYY-MM-DD}|{kind}`` → count; every proxy process HINCRBYs its local counts
    into it on a short interval.
``{p}edge:{edge}:usage:pending``  hash — ``{tenant}|{YYYY-MM-DD}`` → evaluations counted
    at this edge (added by the proxies with their counts, in the same transaction) and
    not yet in control's total; syncd subtracts a batch's share in the same script that
    drops the acknowledged batch and writes the new totals, so central total + pending
    counts every evaluation once.
``{p}edge:{edge}:usage:batch``  hash — the batch syncd is delivering to control: the
    counts above, renamed here atomically, plus ``_seq`` (the batch's sequence). It is
    only deleted once control has acknowledged that sequence, so a syncd killed at any
    point resends the same batch, which control recognises.
``{p}edge:{edge}:usage:seq``  string — the last sequence this edge used (sequences are
    also at least the staging time in ms, so they keep growing if Redis loses this).
``{p}edge:{edge}:usage:today``  hash — ``day`` and, per tenant id, the tenant's central
    evaluation total of that UTC day, from control's last answer.
``{p}edge:{edge}:streams``  hash — per proxy process id, ``{unix ms}|{JSON env → open
    streams}``: each process rewrites its field every second (a heartbeat) and reads the
    others' to cap concurrent streams per environment across the edge; a field older
    than 10 s is a dead process's and is deleted by the next reader (see
    :mod:`proxy.edgestreams`).

Channels:

``{p}changes``  pub/sub on the edge Redis — every applied change, JSON
    ``{"e": env, "v": version, "at": commit time, "keys": bool}`` (``keys`` true when
    the set of live keys changed, so proxies drop cached key lookups for ``e``), and
    ``{"e": env, "v": 0, "removed": true}`` when an environment leaves the edge.
``{p}bus``  pub/sub on the central bus (``CRIVLINE_BUS_URL``) — control publishes the
    same payload it sends with pg_notify after each commit.

Postgres: ``crivline_changes`` is the LISTEN/NOTIFY channel; payload
``{"e": env, "v": version, "t": tenant, "p": project, "at": epoch seconds}``.

Writes go through :class:`crivline.edge_store.EdgeStore` (atomic Lua scripts, guarded
by version); it also has readers for all of the above.
"""

from __future__ import annotations

from dataclasses import dataclass

PG_CHANNEL = "crivline_changes"
DELTA_LOG_LENGTH = 1000

# Fields of the environment hash.
F_VERSION = "version"
F_FLAGSET = "flagset"
F_TENANT = "tenant"
F_PROJECT = "project"
F_ENVIRONMENT = "environment"
F_TENANT_KEY = "tenant_key"
F_PROJECT_KEY = "project_key"
F_ENVIRONMENT_KEY = "environment_key"
F_COMMITTED_AT = "committed_at"
F_APPLIED_AT = "applied_at"


@dataclass(frozen=True, slots=True)
class Keyspace:
    """Redis names for one prefix and one edge."""

    prefix: str = "crivline:"
    edge_id: str = "edge"

    def environment(self, env: str) -> str:
        return f"{self.prefix}env:{env}"

    def deltas(self, env: str) -> str:
        return f"{self.prefix}env:{env}:deltas"

    def environment_keys(self, env: str) -> str:
        return f"{self.prefix}env:{env}:keys"

    def api_key(self, key_hash: str) -> str:
        return f"{self.prefix}key:{key_hash}"

    @property
    def served(self) -> str:
        return f"{self.prefix}edge:{self.edge_id}:environments"

    @property
    def sync_state(self) -> str:
        return f"{self.prefix}edge:{self.edge_id}:sync"

    @property
    def heartbeat(self) -> str:
        return f"{self.prefix}edge:{self.edge_id}:heartbeat"

    @property
    def ticket_secret(self) -> str:
        return f"{self.prefix}edge:{self.edge_id}:ticket-secret"

    @property
    def plans(self) -> str:
        return f"{self.prefix}edge:{self.edge_id}:plans"

    @property
    def usage(self) -> str:
        return f"{self.prefix}edge:{self.edge_id}:usage"

    @property
    def usage_pending(self) -> str:
        return f"{self.prefix}edge:{self.edge_id}:usage:pending"

    @property
    def usage_batch(self) -> str:
        return f"{self.prefix}edge:{self.edge_id}:usage:batch"

    @property
    def usage_sequence(self) -> str:
        return f"{self.prefix}edge:{self.edge_id}:usage:seq"

    @property
    def usage_today(self) -> str:
        return f"{self.prefix}edge:{self.edge_id}:usage:today"

    @property
    def edge_streams(self) -> str:
        return f"{self.prefix}edge:{self.edge_id}:streams"

    def rate_limit(self, key_id: str, second: int) -> str:
        return f"{self.prefix}ratelimit:{key_id}:{second}"

    @property
    def changes(self) -> str:
        return f"{self.prefix}changes"

    @property
    def bus(self) -> str:
        return f"{self.prefix}bus"
