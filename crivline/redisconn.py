"""Redis/Valkey connections from one URL: a single server, Sentinel or a Cluster, with TLS.

Every part builds its Redis clients here — the edge Redis (``CRIVLINE_REDIS_URL``) and
the bus (``CRIVLINE_BUS_URL``) — so each URL form works everywhere:

``redis://[user:password@]host:port[/db]``  one server (``unix:///path.sock`` too).
``rediss://…``  the same over TLS; the CA, client certificate and key come from
    ``CRIVLINE_REDIS_TLS_CA_FILE`` / ``…_CERT_FILE`` / ``…_KEY_FILE``.
``redis+sentinel://[user:password@]host:port[,host:port…]/MASTER[/db]``  the master a set
    of Sentinels names; the user and password are the data nodes' (ACL), the Sentinels'
    own come from ``CRIVLINE_REDIS_SENTINEL_USERNAME`` / ``…_PASSWORD``.
    ``rediss+sentinel://`` speaks TLS to the Sentinels and the data nodes.
``redis+cluster://[user:password@]host:port[,host:port…]``  a Redis Cluster, found from
    any of the given nodes (``rediss+cluster://`` over TLS).

A URL is parsed when the settings are read: a bad one stops the process with one line
naming the variable (:class:`~crivline.errors.ConfigError`). The clients follow a
failover by themselves: a Sentinel client asks the Sentinels for the master again when
its connection fails, a Cluster client refreshes its slot map on ``MOVED`` or a dead node.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast
from urllib.parse import unquote, urlsplit

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import AuthenticationError, ResponseError

from crivline.errors import ConfigError

if TYPE_CHECKING:
    from crivline.settings import Settings

Mode = Literal["single", "sentinel", "cluster"]

_SINGLE = ("redis", "rediss", "unix")
_SENTINEL = ("redis+sentinel", "rediss+sentinel")
_CLUSTER = ("redis+cluster", "rediss+cluster")
SCHEMES = _SINGLE + _SENTINEL + _CLUSTER


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """What a Redis URL names (its repr never shows the password)."""

    variable: str
    mode: Mode
    url: str
    tls: bool
    nodes: tuple[tuple[str, int], ...] = ()
    username: str | None = None
    password: str | None = None
    db: int = 0
    master: str | None = None

    def __repr__(self) -> str:
        where = ",".join(f"{h}:{p}" for h, p in self.nodes) or "(url)"
        return f"RedisTarget({self.variable}, {self.mode}, {where}, tls={self.tls})"


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """The files a ``rediss`` connection verifies and presents (None: system CAs, no
    client certificate)."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None


@dataclass(frozen=True, slots=True)
class SentinelAuth:
    """The Sentinels' own credentials (the password never printed)."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)


def parse(variable: str, raw: str) -> RedisTarget:
    """The target of a Redis URL; :class:`ConfigError` naming ``variable`` when malformed."""
    scheme = raw.split("://", 1)[0].lower() if "://" in raw else ""
    if scheme not in SCHEMES:
        wanted = ", ".join(f"{s}://" for s in SCHEMES)
        shown = f"{scheme}://…" if scheme else "a value without a scheme"
        raise ConfigError(f"{variable} must be a {wanted} URL, got {shown}")
    tls = scheme.startswith("rediss")
    if scheme in _SINGLE:
        return _single(variable, raw, scheme, tls)
    rest, question, _query = raw.split("://", 1)[1].partition("?")
    authority, _, path = rest.partition("/")
    if question:
        raise ConfigError(f"{variable}: {scheme}:// takes no query parameters")
    username, password, hosts = _authority(authority)
    nodes = tuple(_node(variable, h) for h in hosts.split(","))
    segments = [s for s in path.split("/") if s]
    if scheme in _CLUSTER:
        if segments:
            raise ConfigError(
                f"{variable}: a cluster URL has no path (a cluster has only database 0)"
            )
        return RedisTarget(variable, "cluster", raw, tls, nodes, username, password)
    if not segments or len(segments) > 2:
        raise ConfigError(
            f"{variable}: a sentinel URL names the master: "
            f"{scheme}://host:port[,host:port…]/MASTER_NAME[/db]"
        )
    db = _db(variable, segments[1]) if len(segments) == 2 else 0
    return RedisTarget(
        variable, "sentinel", raw, tls, nodes, username, password, db, unquote(segments[0])
    )


def _single(variable: str, raw: str, scheme: str, tls: bool) -> RedisTarget:
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"{variable}: not a valid {scheme}:// URL ({exc})") from None
    if scheme == "unix":
        if not parts.path:
            raise ConfigError(f"{variable}: a unix:// URL needs the socket's path")
        return RedisTarget(variable, "single", raw, tls)
    if not parts.hostname:
        raise ConfigError(f"{variable}: a {scheme}:// URL needs a host")
    path = parts.path.strip("/")
    db = _db(variable, path) if path else 0
    return RedisTarget(
        variable,
        "single",
        raw,
        tls,
        ((parts.hostname, port or 6379),),
        unquote(parts.username) if parts.username else None,
        unquote(parts.password) if parts.password is not None else None,
        db,
    )


def _authority(authority: str) -> tuple[str | None, str | None, str]:
    userinfo, at, hosts = authority.rpartition("@")
    if not at:
        return None, None, authority
    user, colon, password = userinfo.partition(":")
    return (
        unquote(user) or None,
        unquote(password) if colon else None,
        hosts,
    )


def _node(variable: str, text: str) -> tuple[str, int]:
    text = text.strip()
    if text.startswith("["):  # [IPv6]:port
        host, close, port_text = text[1:].partition("]")
        port_text = port_text.removeprefix(":")
        if not close:
            raise ConfigError(f"{variable}: unclosed '[' in host {text!r}")
    else:
        host, _, port_text = text.rpartition(":") if ":" in text else (text, "", "")
    if not host:
        raise ConfigError(f"{variable}: an empty host in the host list")
    if not port_text:
        raise ConfigError(f"{variable}: host {host!r} needs a port (host:port)")
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"{variable}: {port_text!r} is not a port (in {text!r})") from None
    if not 1 <= port <= 65535:
        raise ConfigError(f"{variable}: port {port} is out of range (1-65535)")
    return host, port


def _db(variable: str, text: str) -> int:
    try:
        db = int(text)
    except ValueError:
        raise ConfigError(f"{variable}: database {text!r} is not a number") from None
    if db < 0:
        raise ConfigError(f"{variable}: database {db} is negative")
    return db


def _tls_options(target: RedisTarget, tls: TlsFiles) -> dict[str, Any]:
    if not target.tls:
        return {}
    options: dict[str, Any] = {"ssl": True, "ssl_cert_reqs": "required"}
    if tls.ca_file is not None:
        options["ssl_ca_certs"] = str(tls.ca_file)
    if tls.cert_file is not None:
        options["ssl_certfile"] = str(tls.cert_file)
    if tls.key_file is not None:
        options["ssl_keyfile"] = str(tls.key_file)
    return options


def client(
    target: RedisTarget,
    *,
    tls: TlsFiles | None = None,
    sentinel: SentinelAuth | None = None,
    **options: Any,
) -> Redis:
    """A client for ``target``; ``options`` are redis-py connection options (timeouts,
    ``retry``, ``max_connections`` — per node for a cluster, ``health_check_interval``).

    A Cluster client is returned as :class:`Redis`: it answers the same commands, and
    the few places that must act differently ask :func:`is_cluster`.
    """
    ssl = _tls_options(target, tls or TlsFiles())
    if target.mode == "single":
        ssl.pop("ssl", None)  # from_url picks the TLS connection by the rediss scheme
        return Redis.from_url(target.url, **ssl, **options)
    credentials: dict[str, Any] = {"username": target.username, "password": target.password}
    if target.mode == "sentinel":
        auth = sentinel or SentinelAuth()
        sentinel_options: dict[str, Any] = {
            "username": auth.username,
            "password": auth.password,
            **ssl,
            **{k: v for k, v in options.items() if k.startswith("socket_")},
        }
        manager = Sentinel(
            list(target.nodes), sentinel_kwargs=sentinel_options, **credentials, **ssl, **options
        )
        assert target.master is not None
        master: Redis = manager.master_for(target.master, db=target.db, redis_class=_SentinelMaster)
        return master
    nodes = [ClusterNode(host, port) for host, port in target.nodes]
    cluster = RedisCluster(startup_nodes=nodes, **credentials, **ssl, **options)
    return cast(Redis, cluster)


class _SentinelMaster(Redis):
    """The master a Sentinel group names; closing it closes the Sentinel connections too."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        manager = getattr(self.connection_pool, "sentinel_manager", None)
        for sentinel in getattr(manager, "sentinels", ()):
            await sentinel.aclose()


def refused(exc: BaseException) -> str | None:
    """Why the server refused us for good (credentials, certificate), or None for a
    failure that retrying may cure (the server is down, restarting, failing over)."""
    if isinstance(exc, AuthenticationError):
        return f"authentication failed ({exc})"
    if isinstance(exc, ResponseError) and str(exc).startswith(("NOAUTH", "WRONGPASS", "NOPERM")):
        return f"authentication failed ({exc})"
    text = str(exc)
    if "CERTIFICATE_VERIFY_FAILED" in text or "WRONG_VERSION_NUMBER" in text:
        return "TLS failed: the server's certificate is not trusted (CRIVLINE_REDIS_TLS_CA_FILE)"
    return None


def is_cluster(redis: Redis | RedisCluster) -> bool:
    return isinstance(redis, RedisCluster)


def describe(target: RedisTarget) -> str:
    """Where ``target`` points, for logs (never a password)."""
    if target.mode == "single" and not target.nodes:
        return target.url  # unix:// — a path, no credentials
    scheme = target.url.split("://", 1)[0]
    user = ""
    if target.username or target.password is not None:
        user = (target.username or "") + (":***" if target.password is not None else "") + "@"
    where = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in target.nodes)
    tail = f"/{target.master}" if target.master else ""
    if target.db:
        tail += f"/{target.db}"
    return f"{scheme}://{user}{where}{tail}"


def edge_client(settings: Settings, **options: Any) -> Redis:
    """The edge Redis (``CRIVLINE_REDIS_URL``)."""
    return client(
        parse("CRIVLINE_REDIS_URL", settings.require_redis()),
        tls=settings.redis_tls(),
        sentinel=settings.sentinel_auth(),
        **options,
    )


def bus_client(settings: Settings, **options: Any) -> Redis | None:
    """The bus (``CRIVLINE_BUS_URL``), None when there is none."""
    if settings.bus_url is None:
        return None
    return client(
        parse("CRIVLINE_BUS_URL", settings.bus_url.reveal()),
        tls=settings.redis_tls(),
        sentinel=settings.sentinel_auth(),
        **options,
    )
