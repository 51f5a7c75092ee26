"""Settings: one frozen object built once in ``main`` from ``CRIVLINE_*`` variables.

Command-line flags override the environment. Every value is checked when the object
is built, and a bad one raises :class:`~crivline.errors.ConfigError` naming the
variable. Secrets (URLs with passwords, tokens) are wrapped in :class:`Secret` so they
never show in a repr, a log line or a traceback.
"""

from __future__ import annotations

import hmac
import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from crivline import redisconn
from crivline.errors import ConfigError


class Secret:
    """A string that does not print itself. Call :meth:`reveal` where it is used."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        # In constant time: how long a comparison takes says nothing about the secret.
        return isinstance(other, Secret) and hmac.compare_digest(
            other._value.encode("utf-8", "surrogateescape"),
            self._value.encode("utf-8", "surrogateescape"),
        )

    def __hash__(self) -> int:
        return hash(self._value)


def redact_url(url: str) -> str:
    """The URL with any password replaced, for logs and status output."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    userinfo = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{userinfo}:***@{netloc[1]}"))


def _port(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a port number (1-65535), got {raw!r}") from None
    if not 1 <= value <= 65535:
        raise ConfigError(f"{name} must be a port number (1-65535), got {value}")
    return value


def _positive_int(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if value < 1:
        raise ConfigError(f"{name} must be at least 1, got {value}")
    return value


def _non_negative_int(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if value < 0:
        raise ConfigError(f"{name} must be 0 or more, got {value}")
    return value


def _seconds(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {raw!r}") from None
    if not value > 0 or value != value or value == float("inf"):
        raise ConfigError(f"{name} must be a positive number of seconds, got {raw!r}")
    return value


def _seconds_or_off(name: str, raw: str) -> float:
    """Seconds, or 0 for off."""
    if raw.strip().lower() == "off":
        return 0.0
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds (0: off), got {raw!r}") from None
    if not 0 <= value < float("inf"):
        raise ConfigError(f"{name} must be 0 (off) or a positive number of seconds, got {raw!r}")
    return value


def _share(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number (seconds per second), got {raw!r}") from None
    if not 0 <= value <= 64:
        raise ConfigError(f"{name} must be between 0 (off) and 64, got {raw!r}")
    return value


def _url(schemes: tuple[str, ...]) -> Callable[[str, str], Secret]:
    def parse(name: str, raw: str) -> Secret:
        parts = urlsplit(raw)
        if parts.scheme not in schemes:
            wanted = " or ".join(f"{s}://" for s in schemes)
            shown = raw.split("://", 1)[0] + "://…" if "://" in raw else "a value without a scheme"
            raise ConfigError(f"{name} must be a {wanted} URL, got {shown}")
        return Secret(raw)

    return parse


def _secret(_name: str, raw: str) -> Secret:
    return Secret(raw)


MIN_OPERATOR_TOKEN = 16


def _operator_token(name: str, raw: str) -> Secret:
    if len(raw) < MIN_OPERATOR_TOKEN:
        raise ConfigError(
            f"{name} must be at least {MIN_OPERATOR_TOKEN} characters, got {len(raw)};"
            " make one with: python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    return Secret(raw)


def _text(_name: str, raw: str) -> str:
    return raw


def _prefix(name: str, raw: str) -> str:
    if not raw or any(c.isspace() for c in raw):
        raise ConfigError(f"{name} must be a non-empty key prefix without spaces, got {raw!r}")
    return raw


def _log_level(name: str, raw: str) -> str:
    level = raw.upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ConfigError(f"{name} must be one of DEBUG, INFO, WARNING, ERROR, got {raw!r}")
    return level


def _path(_name: str, raw: str) -> Path:
    return Path(raw)


@dataclass(frozen=True, slots=True)
class PathList:
    """Files named in one variable, separated like ``PATH`` (``os.pathsep``)."""

    paths: tuple[Path, ...] = ()

    def __str__(self) -> str:
        return os.pathsep.join(str(p) for p in self.paths)


def _path_list(_name: str, raw: str) -> PathList:
    return PathList(tuple(Path(p) for p in raw.split(os.pathsep) if p.strip()))


def _switch(name: str, raw: str) -> bool:
    value = raw.lower()
    if value in {"on", "true", "1", "yes"}:
        return True
    if value in {"off", "false", "0", "no"}:
        return False
    raise ConfigError(f"{name} must be on or off, got {raw!r}")


_TIER = re.compile(r"[a-z][a-z0-9_-]{0,31}")


@dataclass(frozen=True, slots=True)
class PriceTiers:
    """Stripe price id → plan tier, written ``price_abc=pro,price_def=enterprise``."""

    pairs: tuple[tuple[str, str], ...] = ()

    def tier(self, price: str | None) -> str | None:
        return next((tier for p, tier in self.pairs if p == price), None)

    def __str__(self) -> str:
        return ",".join(f"{price}={tier}" for price, tier in self.pairs)


def _price_tiers(name: str, raw: str) -> PriceTiers:
    out: dict[str, str] = {}
    for item in raw.split(","):
        price, sep, tier = (part.strip() for part in item.partition("="))
        if not item.strip():
            continue
        if not sep or not price or not _TIER.fullmatch(tier):
            raise ConfigError(
                f"{name} must be price=tier pairs separated by commas"
                f" (price_abc=pro,price_def=enterprise), got {item.strip()!r}"
            )
        out[price] = tier
    return PriceTiers(tuple(out.items()))


def _ratio(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number between 0 and 1, got {raw!r}") from None
    if not 0 <= value <= 1:
        raise ConfigError(f"{name} must be between 0 and 1, got {raw!r}")
    return value


def _http_url(name: str, raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{name} must be an http:// or https:// URL, got {raw!r}")
    return raw.rstrip("/")


_POSTGRES = _url(("postgres", "postgresql"))


def _redis_url(name: str, raw: str) -> Secret:
    redisconn.parse(name, raw)  # every form (single, sentinel, cluster); raises ConfigError
    return Secret(raw)


def _file(name: str, raw: str) -> Path:
    path = Path(raw)
    if not path.is_file():
        raise ConfigError(f"{name}: no readable file at {raw}")
    return path


def _env(
    var: str,
    parse: Callable[[str, str], Any],
    default: Any = None,
    *,
    doc: str,
    shown: str | None = None,
) -> Any:
    """A setting read from ``var``. ``doc`` is its line in the README's configuration
    table (generated from here: :func:`configuration_table`); ``shown`` is its default as
    written there when the value itself would mislead (a host name, a random secret)."""
    return field(default=default, metadata={"env": var, "parse": parse, "doc": doc, "shown": shown})


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a Crivline process can be configured with."""

    database_url: Secret | None = _env(
        "CRIVLINE_DATABASE_URL",
        _POSTGRES,
        doc="central Postgres (`postgresql://…`); unset under `crivline up`: an embedded one",
    )
    control_database_url: Secret | None = _env(
        "CRIVLINE_CONTROL_DATABASE_URL",
        _POSTGRES,
        doc="control's own login (member of `crivline_control`; README, Guarantees);"
        " unset: CRIVLINE_DATABASE_URL",
    )
    syncd_database_url: Secret | None = _env(
        "CRIVLINE_SYNCD_DATABASE_URL",
        _POSTGRES,
        doc="syncd's own login (member of `crivline_syncd`); unset: CRIVLINE_DATABASE_URL",
    )
    relay_database_url: Secret | None = _env(
        "CRIVLINE_RELAY_DATABASE_URL",
        _POSTGRES,
        doc="the relay's own login (member of `crivline_relay`, LISTEN only);"
        " unset: CRIVLINE_DATABASE_URL",
    )
    replica_url: Secret | None = _env(
        "CRIVLINE_REPLICA_URL",
        _POSTGRES,
        doc="optional read replica for syncd's snapshot reads",
    )
    redis_url: Secret | None = _env(
        "CRIVLINE_REDIS_URL",
        _redis_url,
        doc="the edge's Redis/Valkey: `redis[s]://…`, `redis[s]+sentinel://h:p[,h:p…]/MASTER`"
        " or `redis[s]+cluster://h:p[,h:p…]` (see [Redis connections](#redis-connections));"
        " unset under `crivline up`: an embedded one",
    )
    bus_url: Secret | None = _env(
        "CRIVLINE_BUS_URL",
        _redis_url,
        doc="optional Redis pub/sub bus between control and the edges (same URL forms)",
    )
    redis_tls_ca_file: Path | None = _env(
        "CRIVLINE_REDIS_TLS_CA_FILE",
        _file,
        doc="CA certificates (PEM) that `rediss` connections verify the server against;"
        " unset: the system's",
    )
    redis_tls_cert_file: Path | None = _env(
        "CRIVLINE_REDIS_TLS_CERT_FILE",
        _file,
        doc="client certificate (PEM) `rediss` connections present (with the key below)",
    )
    redis_tls_key_file: Path | None = _env(
        "CRIVLINE_REDIS_TLS_KEY_FILE",
        _file,
        doc="private key (PEM) of that client certificate",
    )
    redis_sentinel_username: str | None = _env(
        "CRIVLINE_REDIS_SENTINEL_USERNAME",
        _text,
        doc="ACL user for the Sentinels of a `redis+sentinel://` URL (the URL's user is the"
        " data nodes')",
    )
    redis_sentinel_password: Secret | None = _env(
        "CRIVLINE_REDIS_SENTINEL_PASSWORD",
        _secret,
        doc="password for the Sentinels of a `redis+sentinel://` URL",
    )
    host: str = _env(
        "CRIVLINE_HOST",
        _text,
        "127.0.0.1",
        doc="address the HTTP parts bind",
    )
    proxy_port: int = _env(
        "CRIVLINE_PROXY_PORT",
        _port,
        8080,
        doc="the proxy's port",
    )
    control_port: int = _env(
        "CRIVLINE_CONTROL_PORT",
        _port,
        8081,
        doc="the control API's port",
    )
    syncd_port: int = _env(
        "CRIVLINE_SYNCD_PORT",
        _port,
        8082,
        doc="syncd's port (`/healthz`, `/readyz`, `/metrics`)",
    )
    relay_port: int = _env(
        "CRIVLINE_RELAY_PORT",
        _port,
        8083,
        doc="`crivline relay`'s port (`/healthz`, `/readyz`, `/metrics`)",
    )
    key_prefix: str = _env(
        "CRIVLINE_KEY_PREFIX",
        _prefix,
        "crivline:",
        doc="prefix of every Redis key",
    )
    edge_id: str = _env(
        "CRIVLINE_EDGE_ID",
        _prefix,
        socket.gethostname() or "edge",
        doc="names this edge in Redis",
        shown="host name",
    )
    reconcile_interval: float = _env(
        "CRIVLINE_RECONCILE_INTERVAL",
        _seconds,
        5.0,
        doc="seconds between syncd's version reconciliations",
    )
    syncd_bus_only: bool = _env(
        "CRIVLINE_SYNCD_BUS_ONLY",
        _switch,
        False,
        doc="`on`: syncd never connects to the primary — wake-ups from the bus only, versions"
        " and snapshots from the standby at `CRIVLINE_REPLICA_URL` (both required)",
        shown="`off`",
    )
    syncd_concurrency: int = _env(
        "CRIVLINE_SYNCD_CONCURRENCY",
        _positive_int,
        4,
        doc="environments syncd rebuilds at once; its Postgres pool holds up to this + 2"
        " connections (lower it where many edges share one standby)",
    )
    heartbeat_ttl: float = _env(
        "CRIVLINE_HEARTBEAT_TTL",
        _seconds,
        15.0,
        doc="seconds syncd's heartbeat in Redis lives; a proxy whose edge has none is not ready",
    )
    scope_tenant: str | None = _env(
        "CRIVLINE_SCOPE_TENANT",
        _text,
        doc="serve only this tenant (by key)",
        shown="all",
    )
    scope_project: str | None = _env(
        "CRIVLINE_SCOPE_PROJECT",
        _text,
        doc="serve only this project (by key)",
        shown="all",
    )
    scope_environment: str | None = _env(
        "CRIVLINE_SCOPE_ENVIRONMENT",
        _text,
        doc="serve only this environment (by key)",
        shown="all",
    )
    proxy_workers: int = _env(
        "CRIVLINE_PROXY_WORKERS",
        _positive_int,
        1,
        doc="proxy processes on one port",
    )
    ticket_secret: Secret | None = _env(
        "CRIVLINE_TICKET_SECRET",
        _secret,
        doc="signs browser stream tickets",
        shown="random, shared through Redis",
    )
    trust_forwarded: bool = _env(
        "CRIVLINE_TRUST_FORWARDED",
        _switch,
        False,
        doc="`on`: the proxy believes `X-Forwarded-Proto`/`-Host`/`-For` (only behind a load "
        "balancer that sets them); `off`: the connection and its `Host` only",
        shown="`off`",
    )
    public_url: str | None = _env(
        "CRIVLINE_PUBLIC_URL",
        _http_url,
        doc="the proxy's public base URL (`https://flags.example.com`), used in the stream "
        "URLs it advertises whatever the request's headers say",
    )
    ticket_secret_previous: Secret | None = _env(
        "CRIVLINE_TICKET_SECRET_PREVIOUS",
        _secret,
        doc="the secret `CRIVLINE_TICKET_SECRET` replaces: tickets it signed are still "
        "accepted (nothing new is signed with it); unset it once they have expired (30 min)",
    )
    operator_token: Secret | None = _env(
        "CRIVLINE_OPERATOR_TOKEN",
        _operator_token,
        doc="protects the proxy's status page and syncd's `POST /admin/resync` "
        f"(both 404 without it); at least {MIN_OPERATOR_TOKEN} characters",
    )
    rate_limit_per_second: int = _env(
        "CRIVLINE_RATE_LIMIT",
        _non_negative_int,
        1000,
        doc="requests per second per key (0: off)",
    )
    max_body_bytes: int = _env(
        "CRIVLINE_MAX_BODY_BYTES",
        _positive_int,
        256 * 1024,
        doc="request body limit (413 above it)",
    )
    max_streams_per_key: int = _env(
        "CRIVLINE_MAX_STREAMS_PER_KEY",
        _positive_int,
        1000,
        doc="open streams per key on the edge, all its proxy processes counted (as of "
        "their last report, every second); 429 above it",
    )
    max_streams: int = _env(
        "CRIVLINE_MAX_STREAMS",
        _positive_int,
        20000,
        doc="open streams per proxy process (503 above it)",
    )
    max_connections: int = _env(
        "CRIVLINE_MAX_CONNECTIONS",
        _non_negative_int,
        25000,
        doc="open connections per process of each HTTP part (0: no cap); past it a new "
        "connection gets 503 + `Retry-After` and is closed; the proxy refuses new streams "
        "(503) from 90% of it",
    )
    write_timeout: float = _env(
        "CRIVLINE_WRITE_TIMEOUT",
        _seconds,
        30.0,
        doc="seconds a client has to take an ordinary answer in full once it is handed to "
        "its socket; a connection still holding unsent bytes then is closed",
    )
    redis_max_connections: int = _env(
        "CRIVLINE_REDIS_MAX_CONNECTIONS",
        _positive_int,
        64,
        doc="connections one proxy process may open to its Redis",
    )
    max_streams_per_tenant: int = _env(
        "CRIVLINE_MAX_STREAMS_PER_TENANT",
        _positive_int,
        10000,
        doc="open streams per tenant per process, all its keys and environments (429 above it)",
    )
    max_streams_per_environment: int = _env(
        "CRIVLINE_MAX_STREAMS_PER_ENVIRONMENT",
        _positive_int,
        10000,
        doc="open streams per environment per process (429 above it)",
    )
    tenant_evaluation_share: float = _env(
        "CRIVLINE_TENANT_EVALUATION_SHARE",
        _share,
        0.75,
        doc="seconds of evaluation per second one tenant may use in a proxy process "
        "(a share of one core; 0: off); 429 above it",
    )
    max_stream_seconds: float = _env(
        "CRIVLINE_MAX_STREAM_SECONDS",
        _seconds_or_off,
        0.0,
        doc="a stream's maximum lifetime: the proxy then ends it with a jittered `retry:` "
        "and the client resumes by `Last-Event-ID` (0: off, streams live for ever)",
        shown="`0` (off)",
    )
    stream_reconnect_window: float = _env(
        "CRIVLINE_STREAM_RECONNECT_WINDOW",
        _seconds,
        30.0,
        doc="seconds across which the `retry:` of streams ended for their lifetime is "
        "spread, so their clients do not all reconnect at once",
    )
    state_dir: Path | None = _env(
        "CRIVLINE_STATE_DIR",
        _path,
        doc="where each proxy keeps the environments it applied last, to start and serve "
        "(degraded) while its Redis is empty or unreachable; processes of one edge may share it",
        shown="— (off)",
    )
    bootstrap: PathList = _env(
        "CRIVLINE_BOOTSTRAP",
        _path_list,
        PathList(),
        doc="snapshot files (`crivline export`) the proxy serves when nothing newer is there; "
        "separated by `:` (`crivline proxy --bootstrap FILE…`)",
        shown="—",
    )
    log_level: str = _env(
        "CRIVLINE_LOG_LEVEL",
        _log_level,
        "INFO",
        doc="`DEBUG`, `INFO`, `WARNING`, `ERROR`",
    )
    data_dir: Path = _env(
        "CRIVLINE_DATA_DIR",
        _path,
        Path(".crivline"),
        doc="where `crivline up` keeps the embedded servers' data, logs and "
        "`stack.json` (`--data-dir`)",
    )
    stripe_webhook_secret: Secret | None = _env(
        "CRIVLINE_STRIPE_WEBHOOK_SECRET",
        _secret,
        doc="Stripe endpoint secret; without it `/webhooks/stripe` answers 404",
    )
    stripe_prices: PriceTiers = _env(
        "CRIVLINE_STRIPE_PRICES",
        _price_tiers,
        PriceTiers(),
        doc="Stripe price → plan tier: `price_abc=pro,price_def=enterprise`",
        shown="—",
    )
    ledger_retention_days: int = _env(
        "CRIVLINE_LEDGER_RETENTION_DAYS",
        _positive_int,
        30,
        doc="days control keeps the ids of usage batches and Stripe events it took in"
        " (a redelivery older than that is no longer recognised)",
    )
    housekeeping_interval: float = _env(
        "CRIVLINE_HOUSEKEEPING_INTERVAL",
        _seconds,
        60.0,
        doc="seconds between control's clean-ups and its check for subscription periods"
        " that ended (a plan that changes by time alone reaches the edges)",
    )
    quotas: bool = _env(
        "CRIVLINE_QUOTAS",
        _switch,
        True,
        doc="`off`: the edge never refuses over a daily quota (metering goes on)",
        shown="`on`",
    )
    metering: bool = _env(
        "CRIVLINE_METERING",
        _switch,
        True,
        doc="`off`: the proxy neither counts usage nor enforces plans — only to measure"
        " their cost (`make bench`); never in production",
        shown="`on`",
    )
    usage_flush_interval: float = _env(
        "CRIVLINE_USAGE_FLUSH_INTERVAL",
        _seconds,
        10.0,
        doc="seconds between syncd's usage reports to control",
    )
    control_url: str | None = _env(
        "CRIVLINE_CONTROL_URL",
        _http_url,
        doc="control's base URL, for syncd's usage reports (`make up` sets it)",
    )
    edge_credential: Secret | None = _env(
        "CRIVLINE_EDGE_CREDENTIAL",
        _secret,
        doc="this edge's `crv_edg_…` credential (`crivline edge create`; `make up` makes one)",
    )
    trace_request_ratio: float = _env(
        "CRIVLINE_TRACE_REQUEST_RATIO",
        _ratio,
        0.01,
        doc="share of SDK requests the proxy traces while tracing is on (`OTEL_*`, see"
        " Tracing); 0: none",
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build from ``environ`` (default: ``os.environ``); ``overrides`` win when not None."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            var, parse = f.metadata["env"], f.metadata["parse"]
            override = overrides.pop(f.name, None)
            if override is not None:
                raw = str(override)
            elif env.get(var, "") != "":
                raw = env[var]
            else:
                continue
            values[f.name] = parse(var, raw.strip())
        if overrides:
            raise TypeError(f"unknown settings: {', '.join(sorted(overrides))}")
        settings = cls(**values)
        settings._check()
        return settings

    def _check(self) -> None:
        ports = {
            "CRIVLINE_PROXY_PORT": self.proxy_port,
            "CRIVLINE_CONTROL_PORT": self.control_port,
            "CRIVLINE_SYNCD_PORT": self.syncd_port,
        }  # not the relay's: it runs apart from these (a clash is named when it binds)
        seen: dict[int, str] = {}
        for var, port in ports.items():
            if port in seen:
                raise ConfigError(
                    f"{var} and {seen[port]} are both {port}; each part needs its own"
                )
            seen[port] = var
        if (self.redis_tls_cert_file is None) != (self.redis_tls_key_file is None):
            raise ConfigError(
                "CRIVLINE_REDIS_TLS_CERT_FILE and CRIVLINE_REDIS_TLS_KEY_FILE go together;"
                " only one is set"
            )

        if self.ticket_secret_previous is not None and self.ticket_secret is None:
            raise ConfigError(
                "CRIVLINE_TICKET_SECRET_PREVIOUS is set without CRIVLINE_TICKET_SECRET;"
                " set the new secret there and the old one here while tickets change over"
            )

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    def require_database(self) -> str:
        if self.database_url is None:
            raise ConfigError("CRIVLINE_DATABASE_URL is not set (a postgresql:// URL)")
        return self.database_url.reveal()

    def require_replica(self) -> str:
        if self.replica_url is None:
            raise ConfigError("CRIVLINE_REPLICA_URL is not set (a postgresql:// URL of a standby)")
        return self.replica_url.reveal()

    def require_bus(self) -> str:
        if self.bus_url is None:
            raise ConfigError("CRIVLINE_BUS_URL is not set (a redis:// URL)")
        return self.bus_url.reveal()

    def database_for(self, part: str) -> str:
        """The URL ``part`` (control, syncd or relay) connects with: its own login role
        when one is set, else CRIVLINE_DATABASE_URL (the owner's: not least privilege)."""
        own: Secret | None = getattr(self, f"{part}_database_url")
        return own.reveal() if own is not None else self.require_database()

    def require_redis(self) -> str:
        if self.redis_url is None:
            raise ConfigError("CRIVLINE_REDIS_URL is not set (a redis:// URL)")
        return self.redis_url.reveal()

    def redis_tls(self) -> redisconn.TlsFiles:
        return redisconn.TlsFiles(
            self.redis_tls_ca_file, self.redis_tls_cert_file, self.redis_tls_key_file
        )

    def sentinel_auth(self) -> redisconn.SentinelAuth:
        password = self.redis_sentinel_password
        return redisconn.SentinelAuth(
            self.redis_sentinel_username, password.reveal() if password is not None else None
        )

    def environ(self) -> dict[str, str]:
        """These settings as ``CRIVLINE_*`` variables, to hand to a child process."""
        out: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            out[f.metadata["env"]] = value.reveal() if isinstance(value, Secret) else str(value)
        return out


def configuration_table() -> str:
    """The README's configuration table, one row per setting, from the fields above."""
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for f in fields(Settings):
        shown = f.metadata["shown"]
        if shown is None:
            default = f.default
            shown = "—" if default is None else f"`{default}`"
        rows.append(f"| `{f.metadata['env']}` | {shown} | {f.metadata['doc']} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":  # python -m crivline.settings: print the table for the README
    print(configuration_table(), end="")
