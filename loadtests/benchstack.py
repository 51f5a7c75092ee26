"""The bench runner's stack: ``crivline up`` in a temporary folder, provisioned for load.

:class:`Stack` starts the whole stack on embedded PostgreSQL and Valkey with free ports,
waits for its ``stack.json``, creates a ``bench`` project with a ``production``
environment holding the 100-flag set (:mod:`ltflags`, through the control API's
import), server and client keys, and waits until the proxy serves it. :meth:`stop`
ends everything it started, whatever state it is in.

Also the process measurements the bench needs, read from ``/proc``: CPU seconds, RSS,
the children of a process, and pinning to CPUs. Pure stdlib.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from http.client import HTTPConnection, HTTPException
from pathlib import Path
from typing import Any

import ltconfig
import ltflags

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PROJECT = "bench"
ENVIRONMENT = "production"


class BenchError(RuntimeError):
    pass


# -- processes ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[bytes] | None, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        if proc is not None and exited(proc):
            raise BenchError(f"process {proc.args!r} exited during start-up")
        if time.monotonic() > deadline:
            raise BenchError(f"nothing listens on port {port} after {timeout:.0f}s")
        time.sleep(0.05)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process (0 if it is gone)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        if int(raw[raw.rindex(")") + 2 :].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def identity(pid: int) -> dict[str, int] | None:
    """A process's pid and start time (clock ticks after boot): together they name it
    even after the pid is reused. None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return {"pid": pid, "start": int(raw[raw.rindex(")") + 2 :].split()[19])}


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants."""
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo.extend(children(current))
    return out


def tree_cpu(pids: list[int]) -> float:
    return sum(cpu_seconds(p) for p in pids)


def machine_busy_seconds() -> tuple[float, float]:
    """CPU seconds the whole machine has spent busy since boot (all CPUs, /proc/stat),
    and the part of it spent in interrupts (loopback networking lands there)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / CLOCK_TICKS, (fields[5] + fields[6]) / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def pin(pid: int, cpus: set[int] | None) -> None:
    """Pin every thread of ``pid`` to ``cpus`` (None: all of this machine's)."""
    allowed = cpus if cpus is not None else set(range(os.cpu_count() or 1))
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            os.sched_setaffinity(int(task.name), allowed)


def exited(proc: subprocess.Popen[bytes]) -> bool:
    """Whether a child has exited, without reaping it (so its CPU time can be read)."""
    if proc.returncode is not None:
        return True
    try:
        info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return info is not None


def wait_child(proc: subprocess.Popen[bytes], timeout: float) -> float:
    """Wait for a child (bounded: SIGKILL after ``timeout``); its CPU seconds."""
    if proc.returncode is not None:
        return 0.0  # already reaped elsewhere: its CPU time is gone
    deadline = time.monotonic() + timeout
    while True:
        try:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        except ChildProcessError:
            proc.returncode = proc.returncode if proc.returncode is not None else -1
            return 0.0
        if pid == proc.pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return float(usage.ru_utime + usage.ru_stime)
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
        time.sleep(0.02)


def kill_hard(pid: int) -> None:
    """SIGKILL ``pid``'s process group if it leads one, else just ``pid``."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def raise_open_files_limit(wanted: int = 65536) -> int:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# -- HTTP -----------------------------------------------------------------------------------


def http(
    method: str,
    url: str,
    *,
    token: str | None = None,
    body: Any = None,
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
    timeout: float = 30.0,
) -> tuple[int, dict[str, str], bytes]:
    """One request; ``body`` is sent as JSON, ``raw`` as the exact bytes given."""
    data = json.dumps(body).encode() if body is not None else raw
    request = urllib.request.Request(url, data=data, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def metrics(url: str) -> dict[str, float]:
    """A Prometheus text page as ``{"name{labels}": value}``."""
    _status, _headers, body = http("GET", url + "/metrics", timeout=10)
    return parse_metrics(body)


def parse_metrics(body: bytes) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                out[name] = float(value)
    return out


def worker_pages(
    url: str, token: str, workers: int, server_key: str = "", timeout: float = 20.0
) -> dict[int, tuple[dict[str, Any], dict[str, float]]]:
    """Each worker's ``/status`` JSON and ``/metrics`` of a ``--workers N`` proxy:
    ``{pid: (status, metrics)}``; with ``server_key``, the status also holds
    ``servedVersion``, the version that key's environment has in that worker.

    The pages are asked on one keep-alive connection, so they come from the same worker
    (the status page names its pid); SO_REUSEPORT picks the worker by the connection's
    address and port, so fresh connections reach every worker before long."""
    parts = urllib.parse.urlsplit(url)
    auth = {"Authorization": f"Bearer {token}"}
    found: dict[int, tuple[dict[str, Any], dict[str, float]]] = {}
    deadline = time.monotonic() + timeout
    while len(found) < workers:
        if time.monotonic() > deadline:
            raise BenchError(f"{url}: reached {len(found)} of {workers} workers ({sorted(found)})")
        connection = HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
        try:
            connection.request("GET", "/status", headers=auth)
            answer = connection.getresponse()
            status_body = answer.read()
            if answer.status != 200:
                raise BenchError(f"{url}/status: HTTP {answer.status}: {status_body[:200]!r}")
            status: dict[str, Any] = json.loads(status_body)
            connection.request("GET", "/metrics")
            answer = connection.getresponse()
            page = parse_metrics(answer.read())
            if server_key:
                connection.request(
                    "GET", "/sdk/v1/flags", headers={"Authorization": f"Bearer {server_key}"}
                )
                answer = connection.getresponse()
                answer.read()
                status["servedVersion"] = int(answer.headers.get("Crivline-Version") or 0)
        except (OSError, HTTPException):
            time.sleep(0.05)
            continue
        finally:
            connection.close()
        found[int(status["pid"])] = (status, page)
    return found


def freshest(pages: list[dict[str, float]]) -> dict[str, float]:
    """The edge's metrics from several workers' ``/metrics``: each page is already the
    whole edge's (the workers share one exposition), but a worker adds its per-request
    counts every second, so each series is taken at its highest (counters and histogram
    buckets only grow)."""
    out: dict[str, float] = {}
    for page in pages:
        for name, value in page.items():
            out[name] = max(out.get(name, value), value)
    return out


# -- the stack ------------------------------------------------------------------------------


def _reachable_temp(prefix: str) -> Path:
    """A temporary folder of ours that others may pass through (not list), so the
    embedded PostgreSQL, run as its own user under root, keeps its data in it."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o711)
    return path


@dataclass
class Stack:
    say: Any = print
    keep: bool = False
    server_keys: int = 32
    client_keys: int = 8
    root: Path = field(default_factory=lambda: _reachable_temp("crivline-bench-"))
    proc: subprocess.Popen[bytes] | None = None
    doc: dict[str, Any] = field(default_factory=dict)
    target: ltconfig.Target = field(default_factory=ltconfig.Target)
    extra: list[subprocess.Popen[bytes]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    flag_set_bytes: bytes = b""
    etag: str = ""

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def syncd_url(self) -> str:
        return f"http://127.0.0.1:{self.env['CRIVLINE_SYNCD_PORT']}"

    @property
    def proxy_pid(self) -> int:
        pids = json.loads((self.data_dir / "pids.json").read_text())
        return int(pids["proxy"]["pid"])

    def pids(self) -> dict[str, int]:
        """Every process this stack runs (for the report and for clean-up checks)."""
        out = {"up": self.proc.pid} if self.proc is not None else {}
        with contextlib.suppress(OSError, ValueError):
            for name, entry in json.loads((self.data_dir / "pids.json").read_text()).items():
                out[name] = int(entry["pid"])
        for i, proc in enumerate(self.extra):
            out[f"extra-{i}"] = proc.pid
        return out

    def start(self, timeout: float = 120.0) -> None:
        self.root.chmod(0o755)  # embedded PostgreSQL runs as its own user when we are root
        self.data_dir.mkdir()
        ports = {part: free_port() for part in ("proxy", "control", "syncd")}
        env = {k: v for k, v in os.environ.items() if not k.startswith("CRIVLINE_")}
        env.update(
            {
                "CRIVLINE_PROXY_PORT": str(ports["proxy"]),
                "CRIVLINE_CONTROL_PORT": str(ports["control"]),
                "CRIVLINE_SYNCD_PORT": str(ports["syncd"]),
                # The limiter still runs on every request; it just never refuses one.
                "CRIVLINE_RATE_LIMIT": "1000000",
                # Likewise the per-tenant guards: one tenant is the whole load here.
                "CRIVLINE_MAX_STREAMS_PER_TENANT": "1000000",
                "CRIVLINE_MAX_STREAMS_PER_ENVIRONMENT": "1000000",
                "CRIVLINE_TENANT_EVALUATION_SHARE": "64",
                "CRIVLINE_LOG_LEVEL": "WARNING",
            }
        )
        env.setdefault("XDG_RUNTIME_DIR", str(self.root))
        self.env = env
        log = open(self.root / "up.log", "wb")  # noqa: SIM115 - the child holds it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "crivline", "up", "--data-dir", str(self.data_dir)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        stack_file = self.data_dir / "stack.json"
        deadline = time.monotonic() + timeout
        while not stack_file.exists():
            if self.proc.poll() is not None:
                tail = (self.root / "up.log").read_text(errors="replace")[-2000:]
                raise BenchError(f"crivline up exited with {self.proc.returncode}:\n{tail}")
            if time.monotonic() > deadline:
                raise BenchError(f"crivline up did not come up within {timeout:.0f}s")
            time.sleep(0.1)
        self.doc = json.loads(stack_file.read_text())

    def provision(self, timeout: float = 60.0) -> None:
        """The bench project: the 100-flag set, keys, and the proxy serving it."""
        control = self.doc["parts"]["control"]["url"] + "/api/v1"
        proxy = self.doc["parts"]["proxy"]["url"]
        token = self.doc["demo"]["token"]

        def call(method: str, path: str, body: Any = None) -> dict[str, Any]:
            status, _h, raw = http(method, control + path, token=token, body=body)
            if status not in (200, 201):
                raise BenchError(f"{method} {path}: HTTP {status}: {raw[:300]!r}")
            answer: dict[str, Any] = json.loads(raw)
            return answer

        call("POST", "/projects", {"key": PROJECT, "name": "Load tests"})
        call("POST", f"/projects/{PROJECT}/environments", {"key": ENVIRONMENT})
        env_path = f"/projects/{PROJECT}/environments/{ENVIRONMENT}"
        version = call("POST", env_path + "/import", ltflags.flag_set())["version"]
        keys: dict[str, list[str]] = {"server": [], "client": []}
        for kind, count in (("server", self.server_keys), ("client", self.client_keys)):
            for i in range(count):
                answer = call("POST", env_path + "/keys", {"kind": kind, "label": f"{kind}-{i}"})
                keys[kind].append(answer["key"])
                version = max(version, int(answer.get("environmentVersion") or 0))
        self.target = ltconfig.Target(
            proxy=proxy,
            control=self.doc["parts"]["control"]["url"],
            token=token,
            project=PROJECT,
            environment=ENVIRONMENT,
            server_keys=keys["server"],
            client_keys=keys["client"],
            write_flags=list(ltflags.WRITE_FLAGS),
            eval_flag=ltflags.TARGETED_FLAG,
        )
        self.wait_served(proxy, version, timeout)

    def wait_served(self, proxy: str, version: int, timeout: float) -> None:
        """Until ``proxy`` serves ``version`` (or newer) of the bench environment."""
        deadline = time.monotonic() + timeout
        last = ""
        while True:
            status, headers, body = http(
                "GET", proxy + "/sdk/v1/flags", token=self.target.server_keys[-1]
            )
            served = int(headers.get("Crivline-Version", "0") or 0)
            if status == 200 and served >= version:
                self.flag_set_bytes, self.etag = body, headers["ETag"]
                return
            last = f"HTTP {status}, version {served}"
            if time.monotonic() > deadline:
                raise BenchError(f"{proxy} does not serve version {version} ({last})")
            time.sleep(0.1)

    def start_proxy(
        self, workers: int, name: str = "", **env_overrides: str
    ) -> tuple[str, subprocess.Popen[bytes]]:
        """One more proxy on this edge (``--workers N``, more ``CRIVLINE_*`` settings),
        e.g. to compare worker counts or metering on and off."""
        port = free_port()
        env = dict(self.env)
        env.update(
            {
                "CRIVLINE_REDIS_URL": self.doc["redis_url"],
                "CRIVLINE_PROXY_PORT": str(port),
                "CRIVLINE_PROXY_WORKERS": str(workers),
                **env_overrides,
            }
        )
        log = open(self.root / f"proxy-{name or f'{workers}w'}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "crivline", "proxy"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        self.extra.append(proc)
        url = f"http://127.0.0.1:{port}"
        wait_listening(port, proc, 30)
        return url, proc

    def stop_extra(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)

    def stop(self) -> None:
        for proc in self.extra:
            try:
                self.stop_extra(proc)
            except (OSError, subprocess.SubprocessError) as exc:
                self.say(f"! could not stop proxy {proc.pid}: {exc}")
                kill_hard(proc.pid)
        if self.proc is not None and self.proc.poll() is None:
            recorded = self.pids()
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGTERM)  # up stops its parts and servers
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.say("! crivline up did not stop in 60 s; killing what it started")
                for pid in recorded.values():
                    kill_hard(pid)
                self.proc.wait(10)
        if not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)
