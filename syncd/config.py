"""syncd's own configuration, derived from the shared settings (or built directly in tests)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from crivline.keyspace import Keyspace
from crivline.settings import Settings
from syncd.scope import Scope

# The operator settings' defaults are the defaults here too (one home for each).
_DEFAULT: dict[str, Any] = {f.name: f.default for f in fields(Settings)}


@dataclass(frozen=True, slots=True)
class SyncdConfig:
    keyspace: Keyspace = field(default_factory=Keyspace)
    scope: Scope = field(default_factory=Scope)
    reconcile_interval: float = _DEFAULT["reconcile_interval"]
    heartbeat_ttl: float = _DEFAULT["heartbeat_ttl"]
    host: str = _DEFAULT["host"]
    port: int = _DEFAULT["syncd_port"]  # 0: any free port (tests)
    # LISTEN on Postgres. Off only in tests that prove reconciliation alone suffices.
    listen: bool = True
    # Bus-only edge: no connection to the primary; the pool syncd is given is a streaming
    # standby, wake-ups come from the bus only (LISTEN does not work on a standby).
    bus_only: bool = False
    # How long a wake-up waits for a bus-only edge's standby to replay its version.
    standby_wait: float = 30.0
    # Rebuilds of different environments that may run at once (the pool holds this + 2).
    concurrency: int = _DEFAULT["syncd_concurrency"]
    # How long a lagging read replica may keep us waiting before we read the primary.
    replica_wait: float = 2.0
    # Postgres/Redis calls that take longer than this count as failures.
    io_timeout: float = 10.0
    # On SIGTERM, how long the writes in flight may take to finish.
    shutdown_grace: float = 10.0
    # How often the dedicated LISTEN connection is probed (a dead peer is not always noticed).
    listen_probe_interval: float = 5.0
    # Usage to control (both set: on): control's base URL and this edge's credential.
    control_url: str | None = None
    edge_credential: str | None = field(default=None, repr=False)
    usage_flush_interval: float = 10.0
    # Protects POST /admin/resync (off, 404, without it).
    operator_token: str | None = field(default=None, repr=False)

    @property
    def stale_after(self) -> float:
        """A reconciliation older than this makes syncd not ready."""
        return max(3 * self.reconcile_interval, self.reconcile_interval + 2.0)

    @classmethod
    def from_settings(cls, settings: Settings) -> SyncdConfig:
        return cls(
            keyspace=Keyspace(settings.key_prefix, settings.edge_id),
            scope=Scope(
                tenant=settings.scope_tenant,
                project=settings.scope_project,
                environment=settings.scope_environment,
            ),
            reconcile_interval=settings.reconcile_interval,
            heartbeat_ttl=settings.heartbeat_ttl,
            bus_only=settings.syncd_bus_only,
            concurrency=settings.syncd_concurrency,
            listen=not settings.syncd_bus_only,
            host=settings.host,
            port=settings.syncd_port,
            control_url=settings.control_url,
            edge_credential=(
                settings.edge_credential.reveal() if settings.edge_credential else None
            ),
            usage_flush_interval=settings.usage_flush_interval,
            operator_token=(settings.operator_token.reveal() if settings.operator_token else None),
        )
