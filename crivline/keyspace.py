"""Every Redis name Crivline uses, in one place: the contract between syncd and proxy.

All names start with a configurable prefix (``CRIVLINE_KEY_PREFIX``, default
``crivline:``). Everything here can be rebuilt from the central Postgres; an edge whose
Redis is flushed heals by itself (syncd notices the missing epoch and resyncs).

Names are shown with ``{p}`` for the prefix and ``<env>``/``<edge>`` for the ids; the
braces in a real name are literal: they are the Redis Cluster hash tag. Every name of one
environment carries ``{<env>}`` and every per-edge name ``{<edge>}``, so each
environment's names (and each edge's) hash to one slot: each Lua script and MULTI below
touches one slot only, and environments spread over the cluster's shards. Nothing here is
ever found by SCAN or KEYS: syncd and the proxies reach every name from the served set
and the environment's key set.

Per environment (``env`` is the environment's uuid):

``{p}env:{<env>}``  hash — the environment as served, always written whole and atomically:
    ``version``       the replication clock (environments.version), decimal
    ``flags_version`` the flag set's version (environments.flags_version, read with the
                      snapshot): the version of the last write that changed the flag
                      set; below ``version`` after writes that changed only keys or the
                      plan. SDKs are shown it. Absent (written by an older syncd): take
                      ``version``
    ``flagset``       the flag set, canonical flagd JSON bytes (sorted keys)
    ``tenant``, ``project``, ``environment``   ids (uuids)
    ``tenant_key``, ``project_key``, ``environment_key``   slugs
    ``committed_at``  epoch seconds of the change in Postgres (for propagation lag)
    ``applied_at``    epoch seconds when syncd wrote it
    ``traceparent``   W3C trace context of syncd's span that wrote this version (only
                      while tracing is on): the proxies' spans for applying it are its
                      children

``{p}env:{<env>}:deltas``  stream, capped — one entry per applied version, fields:
    ``v``     the version this entry brings the environment to
    ``base``  the version it was computed against (the one before it in Redis)
    ``delta`` JSON ``{"flags": {key: definition}, "removed": [key…],
              "evaluators": {name: fragment}, "removedEvaluators": [name…]}``, plus
              ``"metadata"`` (the new top-level flag-set metadata, whole) only when that
              changed; applied to the flag set of version ``base`` it gives that of ``v``
              (an entry may be empty: a version that changed only keys)
    ``fv``    the flag set's version at ``v`` (absent in entries of an older syncd: ``v``);
              an entry whose ``fv`` is the one before it changed only keys or the plan
    ``at``    commit time, epoch seconds
    ``tp``    W3C trace context of syncd's span that wrote it (only while tracing is on)
    A stream client resuming from version X is sent the entries after X only if they form
    an unbroken chain (the first one's ``base`` is X, each next ``base`` is the previous
    ``v``); otherwise it gets the full flag set. ``base`` differs from the previous ``v``
    when a writer found an unexpected version in Redis (another syncd, a flush).

``{p}env:{<env>}:keys``  set — hex SHA-256 of each live API key of the environment; a
    key record below counts only while its hash is in this set (the set is written with
    the environment, atomically; the records sit in other slots and are written beside).

``{p}key:{sha256}``  hash — one live API key:
    ``environment``, ``project``, ``tenant`` (uuids), ``kind`` (server|client),
    ``id`` (the key's uuid), ``expires_at`` (epoch seconds, or empty for never); a key
    with an expiry also carries it as the hash's TTL, so Redis drops it on time.

Per edge (``edge`` is ``CRIVLINE_EDGE_ID``):

``{p}edge:{<edge>}:environments``  set — ids of the environments this edge serves.
``{p}edge:{<edge>}:sync``  hash — ``epoch`` (random, written at full sync: its absence
    means Redis lost our data), ``full_sync_at``, ``reconciled_at`` (epoch seconds), and
    ``pending:{token}`` fields while a full sync runs (the epoch is only written if its
    marker survived, i.e. Redis lost nothing meanwhile). This edge's data is complete
    and fresh while ``epoch`` exists and ``reconciled_at`` is recent (a few reconcile
    intervals). A new ``epoch`` value means Redis was rebuilt from empty. With the last
    reconciliation: ``reconciled_started`` (when it began, by this Redis server's
    ``TIME``, before it read Postgres) and ``reconciled_behind`` (the environment ids it
    found older here than in Postgres, comma-separated; ``*``: more than 100) — a
    full sync removes both.
``{p}edge:{<edge>}:heartbeat``  string with a TTL — syncd is alive while it exists; JSON
    ``{"pid", "host", "started_at", "at", "epoch", "ready", "scope"}`` of the syncd that
    wrote it last (several syncd at one edge share it).
``{p}edge:{<edge>}:ticket-secret``  string — the proxies' shared secret for signing browser
    stream tickets when ``CRIVLINE_TICKET_SECRET`` is unset (the first proxy sets it with
    NX, every other process at the edge adopts it; a flush just makes them pick a new one).
``{p}ratelimit:{key_id}:{second}``  string with a TTL — requests of one API key in one
    epoch second, summed over every proxy process (each adds its local count in batches).

Usage (the one flow from the edge to the centre; see ``crivline/usage.py``):

``{p}edge:{<edge>}:plans``  hash — tenant id → ``{revision}|{plan JSON}``: the plan
    limits the edge enforces for each tenant it serves (see
    :class:`crivline.plans.EdgePlan`); written by syncd before it applies an environment
    of the tenant, never replaced by an older revision; read by the proxies.
``{p}edge:{<edge>}:usage``  hash — counts not yet handed to syncd, field
    ``{env}|{YYYY-MM-DD}|{kind}`` → count; every proxy process HINCRBYs its local counts
    into it on a short interval.
``{p}edge:{<edge>}:usage:pending``  hash — ``{tenant}|{YYYY-MM-DD}`` → evaluations counted
    at this edge (added by the proxies with their counts, in the same transaction) and
    not yet in control's total; syncd subtracts a batch's share in the same script that
    drops the acknowledged batch and writes the new totals, so central total + pending
    counts every evaluation once.
``{p}edge:{<edge>}:usage:batch``  hash — the batch syncd is delivering to control: the
    counts above, renamed here atomically, plus ``_seq`` (the batch's sequence). It is
    only deleted once control has acknowledged that sequence, so a syncd killed at any
    point resends the same batch, which control recognises.
``{p}edge:{<edge>}:usage:seq``  string — the last sequence this edge used (sequences are
    also at least the staging time in ms, so they keep growing if Redis loses this).
``{p}edge:{<edge>}:usage:today``  hash — ``day`` and, per tenant id, the tenant's central
    evaluation total of that UTC day, from control's last answer.
``{p}edge:{<edge>}:streams``  hash — per proxy process id, ``{unix ms}|{JSON env → open
    streams}``: each process rewrites its field every second (a heartbeat) and reads the
    others' to cap concurrent streams per environment across the edge; a field older
    than 10 s is a dead process's and is deleted by the next reader (see
    :mod:`proxy.edgestreams`).

``{p}edge:{edge}:proxies``  hash — per proxy process (``{host}:{pid}``), JSON
    ``{"at", "host", "pid", "startedAt", "status", "versions": {env: version}}``: what
    each process serves, rewritten every few seconds (a heartbeat; the hash expires when
    none writes it), deleted at a graceful stop. ``crivline status`` reads it (see
    :mod:`proxy.edge.presence`).

Channels:

``{p}changes``  pub/sub on a single-server or Sentinel edge Redis — every applied change,
    JSON
    ``{"e": env, "v": version, "at": commit time, "keys": bool}`` (``keys`` true when
    the set of live keys changed, so proxies drop cached key lookups for ``e``), and
    ``{"e": env, "v": 0, "removed": true}`` when an environment leaves the edge.
``{p}env:{<env>}:changes``  sharded channel (cluster mode only) — the same
    announcements for one environment, sent with SPUBLISH by the apply script (it is in
    the environment's slot); each proxy SSUBSCRIBEs to the channel of every environment
    its edge serves, so it listens on exactly the shards that hold them.
``{p}edge:{<edge>}:changes``  sharded channel (cluster mode only) — an environment that
    joined the edge is announced here too, so proxies start following its channel.
``{p}bus``  pub/sub on the central bus (``CRIVLINE_BUS_URL``; SPUBLISH/SSUBSCRIBE when
    the bus is a cluster) — control publishes the same payload it sends with pg_notify
    after each commit, and ``crivline relay`` republishes every notification it LISTENs
    to on the primary.
``{{p}bus}:versions``  hash on the central bus: environment → the highest version a
    relay has published, so several relays publish each version once. Its hash tag is
    the bus channel's name, so on a cluster bus the relay's script (guard + SPUBLISH)
    stays in one slot.

Postgres: ``crivline_changes`` is the LISTEN/NOTIFY channel; payload
``{"e": env, "v": version, "t": tenant, "p": project, "at": epoch seconds}``, plus
``"tp"`` (the W3C traceparent of the write) when the write was traced; the bus message
is the same.

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
# The flag set's version, from the central database (environments.flags_version): the
# version itself, or, when writes since changed only the environment's keys (or its
# plan), the version of the last one that changed the flag set. SDKs see it (ETags,
# stream ids). Every edge reads the same number for a version: it is never derived
# from what one edge applied.
F_FLAGS_VERSION = "flags_version"
F_TRACEPARENT = "traceparent"


@dataclass(frozen=True, slots=True)
class Keyspace:
    """Redis names for one prefix and one edge."""

    prefix: str = "crivline:"
    edge_id: str = "edge"

    def environment(self, env: str) -> str:
        return f"{self.prefix}env:{{{env}}}"

    def deltas(self, env: str) -> str:
        return f"{self.prefix}env:{{{env}}}:deltas"

    def environment_keys(self, env: str) -> str:
        return f"{self.prefix}env:{{{env}}}:keys"

    def environment_changes(self, env: str) -> str:
        """The environment's sharded channel (cluster mode): in its hash slot."""
        return f"{self.prefix}env:{{{env}}}:changes"

    def api_key(self, key_hash: str) -> str:
        return f"{self.prefix}key:{key_hash}"

    def _edge(self, name: str) -> str:
        return f"{self.prefix}edge:{{{self.edge_id}}}:{name}"

    @property
    def served(self) -> str:
        return self._edge("environments")

    @property
    def sync_state(self) -> str:
        return self._edge("sync")

    @property
    def heartbeat(self) -> str:
        return self._edge("heartbeat")

    @property
    def ticket_secret(self) -> str:
        return self._edge("ticket-secret")

    def status_session_ended(self, session_id: str) -> str:
        """A status page session signed out (until it would have expired)."""
        return f"{self.prefix}edge:{self.edge_id}:status-ended:{session_id}"

    @property
    def plans(self) -> str:
        return self._edge("plans")

    @property
    def usage(self) -> str:
        return self._edge("usage")

    @property
    def usage_pending(self) -> str:
        return self._edge("usage:pending")

    @property
    def usage_batch(self) -> str:
        return self._edge("usage:batch")

    @property
    def usage_sequence(self) -> str:
        return self._edge("usage:seq")

    @property
    def edge_key_streams(self) -> str:
        """Each proxy process's open streams per key (hash), for the per-key limit."""
        return f"{self.prefix}edge:{self.edge_id}:streams-by-key"

    @property
    def usage_today(self) -> str:
        return self._edge("usage:today")

    @property
    def edge_streams(self) -> str:
        return self._edge("streams")

    @property
    def edge_changes(self) -> str:
        """The edge's sharded channel (cluster mode): environments joining the edge."""
        return self._edge("changes")

    @property
    def proxies(self) -> str:
        return self._edge("proxies")

    def rate_limit(self, key_id: str, second: int) -> str:
        return f"{self.prefix}ratelimit:{key_id}:{second}"

    @property
    def changes(self) -> str:
        return f"{self.prefix}changes"

    @property
    def bus(self) -> str:
        return f"{self.prefix}bus"

    @property
    def bus_versions(self) -> str:
        return f"{{{self.bus}}}:versions"  # in the slot of the channel ``bus``
