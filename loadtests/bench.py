"""``make bench``: the proxy under load, against a baseline measured in the same run.

What one run does (bounded: ~7 minutes in full, under a minute with ``--smoke``):

1. ``crivline up`` in a temporary folder (embedded PostgreSQL and Valkey, free ports),
   a ``bench`` project with the 100-flag set (:mod:`ltflags`), 32 server keys and 8
   client keys; the baseline server (:mod:`baseline`) beside it.
2. **Streams** (locust :mod:`streams` + :mod:`writers`): N streams opened and idle →
   the proxy's resident memory per stream; then writers change flags and every stream
   reports each patch's commit-to-client latency (10,000 streams, then 1,000).
3. **Throughput**: a closed-loop generator (``wrk`` when installed, else
   :mod:`hammer`) against each endpoint, alternating proxy and baseline round by
   round. Reported: requests/s, the server's CPU per request, the generator's CPU,
   proxy/baseline ratios.
4. **Workers**: the polling 304 path on one proxy process, then on ``--workers 2``
   (unpinned: workers and generator share both CPUs), alternating.
4b. **Metering**: polling (200 and 304) on two fresh proxies of the same edge, one as
   shipped and one with ``CRIVLINE_METERING=off`` (no usage counting, no quota or
   stream-cap checks), alternating round by round, pinned like the throughput phase:
   the on/off ratio is metering's cost (target ≥ 0.97).
5. **Scenarios** (locust): ``polling`` (+ a writer), ``ofrep``, ``edge-day``.
6. The report: ``report.md`` (tables, targets), PNG plots, ``results.json``, the raw
   locust CSVs and logs, in ``loadtests/results/<time>/`` (or ``--out``).

Except in the workers phase, the server under test (proxy or baseline) is pinned to one
CPU and the load generator (wrk, hammer or locust) to the other, so neither steals the
other's core; PostgreSQL, syncd, Valkey, control and the writers run anywhere. Locust
only ever runs as a subprocess (importing it patches the standard library with
gevent); this runner imports none of the locustfiles.

    .venv/bin/python loadtests/bench.py            # the full run
    .venv/bin/python loadtests/bench.py --smoke    # seconds per phase (make test runs it)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from statistics import median
from typing import Any

import benchreport
import ltflags
from benchstack import (
    BenchError,
    Stack,
    cpu_seconds,
    exited,
    free_port,
    freshest,
    http,
    identity,
    machine_busy_seconds,
    metrics,
    pin,
    raise_open_files_limit,
    rss_bytes,
    tree,
    tree_cpu,
    wait_child,
    wait_listening,
    worker_pages,
)

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
PHASES = ("streams", "streams-workers", "throughput", "workers", "metering", "scenarios")

CONTEXT = (
    '{"context":{"targetingKey":"user-{n}","email":"user{n}@example.com",'
    '"plan":"pro","country":"JP","appVersion":"2.1.0"}}'
)
FIXED_CONTEXT = CONTEXT.replace("{n}", "42")
# The stream clients of the streams-workers phase yield the CPU to the workers: with
# "idle" they run under SCHED_IDLE (only when nothing else is runnable, and their
# wake-ups never preempt a worker), with "nice" at this niceness. Either way a patch's
# arrival is the kernel's time stamp on the client's socket, so a client that reads late
# still measures when the bytes reached it.
CLIENT_NICE = 10
CLIENT_SCHEDULING = ("idle", "nice")
AUTOGROUP_NICE = 19  # the clients' session group, under SCHED_IDLE


@dataclass(frozen=True)
class Plan:
    mode: str
    run_seconds: float  # one generator run
    rounds: int  # proxy/baseline alternations per case
    warmup_seconds: float
    connections: int
    stream_phases: tuple[tuple[int, float, float], ...]  # (streams, write seconds, writes/s)
    # (streams, stream-client processes, write seconds, writes/s) on `--workers 2`
    worker_streams: tuple[int, int, float, float]
    spawn_rate: int
    polling: tuple[int, float]  # users, seconds
    ofrep: tuple[int, float]
    edge_day: tuple[int, float]


FULL = Plan(
    mode="full",
    run_seconds=5,
    rounds=3,
    warmup_seconds=1,
    connections=50,
    stream_phases=((10_000, 20, 1.0), (1_000, 20, 2.0)),
    worker_streams=(20_000, 4, 20, 1.0),
    spawn_rate=1000,
    polling=(500, 20),
    ofrep=(300, 20),
    edge_day=(1000, 30),
)
SMOKE = Plan(
    mode="smoke",
    run_seconds=0.5,
    rounds=1,
    warmup_seconds=0,
    connections=8,
    stream_phases=((20, 2, 3.0),),
    worker_streams=(40, 2, 2, 3.0),
    spawn_rate=100,
    polling=(20, 2),
    ofrep=(20, 2),
    edge_day=(40, 3),
)


@dataclass(frozen=True)
class Load:
    """One request shape: pre-built, or with ``{n}`` in the body replaced per request."""

    method: str
    path: str
    headers: dict[str, str]
    body: str = ""
    vary: bool = False


@dataclass(frozen=True)
class Case:
    name: str
    title: str
    proxy: Load | Callable[[], Load]  # a callable is asked before every run
    baseline: Load
    target_ratio: float | None = None
    target_rps: float | None = None
    small_answers: bool | None = None  # True: 304s expected; False: full bodies

    def load(self, side: str) -> Load:
        if side == "baseline":
            return self.baseline
        return self.proxy() if callable(self.proxy) else self.proxy


# -- generators ------------------------------------------------------------------------------


_WRK_DONE = """
function done(summary, latency, requests)
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,' ..
    '"write":%d,"status":%d,"timeout":%d,"p50_us":%d,"p99_us":%d}\\n',
    summary.requests, summary.duration, summary.bytes, summary.errors.connect,
    summary.errors.read, summary.errors.write, summary.errors.status,
    summary.errors.timeout, latency:percentile(50), latency:percentile(99)))
end
"""


def _lua(text: str) -> str:
    if "]==]" in text:
        raise ValueError("cannot quote this for Lua")
    return f"[==[{text}]==]"


class Generator:
    name = ""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir

    def command(
        self, url: str, load: Load, seconds: float, connections: int, threads: int
    ) -> list[str]:
        raise NotImplementedError

    def parse(self, output: str) -> dict[str, Any]:
        raise NotImplementedError


class Wrk(Generator):
    def __init__(self, workdir: Path, binary: str) -> None:
        super().__init__(workdir)
        self.binary = binary
        version = subprocess.run([binary, "-v"], capture_output=True, text=True, check=False)
        self.name = (version.stdout + version.stderr).strip().splitlines()[0].split(" [")[0]
        self._scripts = 0

    def command(
        self, url: str, load: Load, seconds: float, connections: int, threads: int
    ) -> list[str]:
        lines = [f"wrk.method = {_lua(load.method)}"]
        lines += [f"wrk.headers[ {_lua(k)} ] = {_lua(v)}" for k, v in load.headers.items()]
        if load.body and not load.vary:
            lines.append(f"wrk.body = {_lua(load.body)}")
            lines.append('wrk.headers["Content-Type"] = "application/json"')
        if load.vary:
            body = " .. n .. ".join(_lua(part) for part in load.body.split("{n}"))
            lines += [
                'wrk.headers["Content-Type"] = "application/json"',
                "local counter = 0",
                "local threads = 0",
                'function setup(thread) thread:set("tid", threads); threads = threads + 1 end',
                "function request()",
                "  counter = counter + 1",
                '  local n = (tid or 0) .. "x" .. counter',
                f"  return wrk.format(nil, nil, nil, {body})",
                "end",
            ]
        self._scripts += 1
        script = self.workdir / f"wrk-{self._scripts}.lua"
        script.write_text("\n".join(lines) + "\n" + _WRK_DONE)
        return [
            self.binary,
            f"-t{threads}",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "-s",
            str(script),
            url + load.path,
        ]

    def parse(self, output: str) -> dict[str, Any]:
        line = next((x for x in output.splitlines() if x.startswith("WRKJSON ")), None)
        if line is None:
            raise BenchError(f"wrk printed no summary:\n{output[-800:]}")
        raw = json.loads(line.removeprefix("WRKJSON "))
        errors = sum(raw[k] for k in ("connect", "read", "write", "status", "timeout"))
        return {
            "requests": raw["requests"],
            "seconds": raw["duration_us"] / 1e6,
            "bytes": raw["bytes"],
            "errors": errors,
            "p50_ms": raw["p50_us"] / 1000,
            "p99_ms": raw["p99_us"] / 1000,
        }


class Hammer(Generator):
    name = "hammer.py (Python, uvloop)"

    def command(
        self, url: str, load: Load, seconds: float, connections: int, threads: int
    ) -> list[str]:
        cmd = [sys.executable, str(HERE / "hammer.py"), "--url", url + load.path]
        cmd += ["--method", load.method, "--duration", str(seconds)]
        cmd += ["--connections", str(connections)]
        for name, value in load.headers.items():
            cmd += ["-H", f"{name}: {value}"]
        if load.body:
            cmd += ["-H", "Content-Type: application/json", "--body", load.body]
        if load.vary:
            cmd.append("--vary")
        return cmd

    def parse(self, output: str) -> dict[str, Any]:
        raw = json.loads(output.strip().splitlines()[-1])
        bad = sum(v for k, v in raw["statuses"].items() if not k.startswith(("2", "3")))
        return {
            "requests": raw["requests"],
            "seconds": raw["seconds"],
            "bytes": raw["bytes"],
            "errors": raw["errors"] + bad,
            "p50_ms": raw["p50_ms"],
            "p99_ms": raw["p99_ms"],
            "statuses": raw["statuses"],
        }


# -- the runner ------------------------------------------------------------------------------


@dataclass
class Bench:
    plan: Plan
    out: Path
    generator_choice: str = "auto"
    keep: bool = False
    phases: tuple[str, ...] = PHASES
    client_scheduling: str = CLIENT_SCHEDULING[0]  # the streams-workers clients'
    started: float = field(default_factory=time.monotonic)
    results: dict[str, Any] = field(default_factory=dict)
    children: list[subprocess.Popen[bytes]] = field(default_factory=list)
    spawned: dict[int, float] = field(default_factory=dict)  # pid -> when it started
    lifetimes: dict[int, float] = field(default_factory=dict)  # pid -> seconds it ran
    stack: Stack | None = None
    baseline_url: str = ""
    baseline_proc: subprocess.Popen[bytes] | None = None
    generator: Generator | None = None
    cpus: tuple[set[int], set[int]] | None = None  # (server, generator) when pinning

    # -- output ------------------------------------------------------------------------

    def say(self, line: str) -> None:
        elapsed = time.monotonic() - self.started
        print(f"[{elapsed:6.1f}s] {line}", flush=True)

    # -- processes ---------------------------------------------------------------------

    def spawn(
        self,
        cmd: list[str],
        log_name: str,
        cpus: set[int] | None = None,
        nice: int = 0,
        idle: bool = False,
    ) -> subprocess.Popen[bytes]:
        def pin_self() -> None:
            if cpus is not None:
                os.sched_setaffinity(0, cpus)
            if nice:
                os.nice(nice)
            if idle:
                os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
            if nice or idle:
                # The child leads a new session, and with the kernel's autogroups on
                # (Linux's default) each session is a scheduling group of its own that
                # gets a fair share against the others whatever the niceness or policy
                # of its processes: lower the group itself too.
                with contextlib.suppress(OSError), open("/proc/self/autogroup", "w") as group:
                    group.write(str(AUTOGROUP_NICE if idle else nice))

        log = open(self.out / "logs" / log_name, "ab")  # noqa: SIM115 - the child holds it
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=pin_self if cpus is not None or nice or idle else None,
            cwd=self.out,
        )
        log.close()
        self.children.append(proc)
        self.spawned[proc.pid] = time.monotonic()
        return proc

    def reap(self, proc: subprocess.Popen[bytes], timeout: float) -> float:
        cpu = wait_child(proc, timeout)
        if proc.pid in self.spawned:
            self.lifetimes[proc.pid] = time.monotonic() - self.spawned.pop(proc.pid)
        with contextlib.suppress(ValueError):
            self.children.remove(proc)
        return cpu

    def terminate(self, proc: subprocess.Popen[bytes], timeout: float = 30) -> float:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        return self.reap(proc, timeout)

    def cleanup(self) -> None:
        """Stop everything this run started, whatever failed before (or fails here)."""
        try:
            for proc in list(self.children):
                if proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGTERM)
            for proc in list(self.children):
                with contextlib.suppress(OSError):
                    self.reap(proc, 20)
        finally:
            if self.stack is not None:
                self.say("stopping the stack …")
                self.stack.stop()

    def remember(self, pids: dict[str, int]) -> None:
        """Processes the run started (the smoke test checks they are all gone after)."""
        for name, pid in pids.items():
            found = identity(pid)
            if found is not None:
                self.results["processes"][name] = found

    # -- set-up ------------------------------------------------------------------------

    def setup(self) -> None:
        limit = raise_open_files_limit()
        (self.out / "logs").mkdir(parents=True, exist_ok=True)
        self.results["machine"] = machine()
        self.results["machine"]["open_files_limit"] = limit
        self.results["plan"] = asdict(self.plan)
        wrk = shutil.which("wrk")
        if self.generator_choice == "wrk" and wrk is None:
            raise BenchError("--generator wrk: wrk is not installed (make bench-deps)")
        if self.generator_choice != "python" and wrk is not None:
            self.generator = Wrk(self.out, wrk)
        else:
            self.generator = Hammer(self.out)
            if self.generator_choice == "auto":
                self.say("wrk is not installed: throughput uses the slower Python generator")
        self.results["generator"] = self.generator.name
        available = sorted(os.sched_getaffinity(0))
        if len(available) >= 2:
            self.cpus = ({available[0]}, {available[1]})
        self.results["pinning"] = (
            {"server": sorted(self.cpus[0]), "generator": sorted(self.cpus[1])}
            if self.cpus
            else None
        )

        self.say("starting the stack (crivline up, embedded PostgreSQL and Valkey) …")
        self.stack = Stack(say=self.say, keep=self.keep)
        self.results["processes"] = {}
        self.stack.start()
        self.remember(self.stack.pids())
        self.say(f"stack up in {self.stack.root}; installing the 100-flag set and keys …")
        self.stack.provision()
        self.remember(self.stack.pids())
        target = self.stack.target
        (self.out / "target.json").write_text(target.to_json())
        (self.out / "target.json").chmod(0o600)  # it holds keys and a token
        self.results["flag_set"] = {
            "flags": len(json.loads(self.stack.flag_set_bytes)["flags"]),
            "bytes": len(self.stack.flag_set_bytes),
        }
        self.say(f"proxy {target.proxy} (pid {self.stack.proxy_pid})")

    def start_baseline(self) -> None:
        """The baseline, serving the flag set the proxy serves now (same size, byte for
        byte); the proxy's current ETag is refreshed at the same time."""
        stack = self.stack
        assert stack is not None
        stack.wait_served(stack.target.proxy, 1, 30)
        body_file = self.out / "flagset.json"
        body_file.write_bytes(stack.flag_set_bytes)
        self.results["flag_set"] = {
            "flags": len(json.loads(stack.flag_set_bytes)["flags"]),
            "bytes": len(stack.flag_set_bytes),
        }
        port = free_port()
        cmd = [sys.executable, str(HERE / "baseline.py"), "--port", str(port)]
        self.baseline_proc = self.spawn([*cmd, "--body-file", str(body_file)], "baseline.log")
        wait_listening(port, self.baseline_proc, 30)
        self.baseline_url = f"http://127.0.0.1:{port}"
        self.remember({"baseline": self.baseline_proc.pid})
        self.say(f"baseline {self.baseline_url}, generator {self.generator_name()}")

    def generator_name(self) -> str:
        return self.generator.name if self.generator is not None else "?"

    # -- throughput ----------------------------------------------------------------------

    def cases(self) -> list[Case]:
        stack = self.stack
        assert stack is not None
        server = {"Authorization": f"Bearer {stack.target.server_keys[0]}"}
        client = {"Authorization": f"Bearer {stack.target.client_keys[0]}"}
        _s, headers, _b = http("GET", self.baseline_url + "/bytes")
        baseline_etag = headers["ETag"]

        def bulk_hit() -> Load:
            # Asked again before every run: the ETag also covers the stream-ticket window,
            # which turns over every 15 minutes.
            _s, answer, _b = http(
                "POST",
                stack.target.proxy + "/ofrep/v1/evaluate/flags",
                raw=FIXED_CONTEXT.encode(),  # the ETag covers the body's exact bytes
                headers={**client, "Content-Type": "application/json"},
            )
            headers = {**client, "If-None-Match": answer["ETag"]}
            return Load("POST", "/ofrep/v1/evaluate/flags", headers, FIXED_CONTEXT)

        single = f"/ofrep/v1/evaluate/flags/{ltflags.TARGETED_FLAG}"
        return [
            Case(
                "flags-304",
                "GET /sdk/v1/flags, If-None-Match hit (304)",
                Load("GET", "/sdk/v1/flags", {**server, "If-None-Match": stack.etag}),
                Load("GET", "/bytes", {"If-None-Match": baseline_etag}),
                target_ratio=0.75,
                small_answers=True,
            ),
            Case(
                "flags-200",
                "GET /sdk/v1/flags, full flag set (200)",
                Load("GET", "/sdk/v1/flags", server),
                Load("GET", "/bytes", {}),
                target_ratio=0.75,
                small_answers=False,
            ),
            Case(
                "ofrep-single",
                f"OFREP single evaluation of {ltflags.TARGETED_FLAG}, new context each request",
                Load("POST", single, server, CONTEXT, vary=True),
                Load("POST", "/json", {}, CONTEXT, vary=True),
                target_ratio=0.60,
            ),
            Case(
                "bulk-new-context",
                "OFREP bulk, 100 flags, new context each request",
                Load("POST", "/ofrep/v1/evaluate/flags", client, CONTEXT, vary=True),
                Load("POST", "/json", {}, CONTEXT, vary=True),
                target_rps=3000,
            ),
            Case(
                "bulk-etag",
                "OFREP bulk, 100 flags, If-None-Match hit (304)",
                bulk_hit,
                Load("POST", "/json", {}, FIXED_CONTEXT),
                target_ratio=0.60,
                small_answers=True,
            ),
        ]

    def measure(
        self,
        url: str,
        load: Load,
        server_pids: list[int],
        *,
        seconds: float,
        connections: int,
        threads: int = 1,
        cpus: set[int] | None = None,
        label: str = "",
    ) -> dict[str, Any]:
        generator = self.generator
        assert generator is not None
        cmd = generator.command(url, load, seconds, connections, threads)
        before = tree_cpu(server_pids)
        busy, irq = machine_busy_seconds()
        wall = time.monotonic()
        proc = self.spawn(cmd, "generator.log", cpus)
        generator_cpu = self.reap(proc, seconds + 60)
        wall = time.monotonic() - wall
        server_cpu = tree_cpu(server_pids) - before
        busy_after, irq_after = machine_busy_seconds()
        busy, irq = busy_after - busy, irq_after - irq
        output = (self.out / "logs" / "generator.log").read_text(errors="replace")
        (self.out / "logs" / "generator.log").unlink()
        if proc.returncode != 0:
            raise BenchError(f"{label}: the generator failed ({proc.returncode}):\n{output[-800:]}")
        run = generator.parse(output)
        seconds_run = run["seconds"] or wall
        requests = run["requests"]
        run.update(
            rps=requests / seconds_run,
            bytes_per_response=run["bytes"] / requests if requests else 0,
            server_cores=server_cpu / wall,
            generator_cores=generator_cpu / wall,
            server_us_per_request=server_cpu / requests * 1e6 if requests else None,
            generator_us_per_request=generator_cpu / requests * 1e6 if requests else None,
            # CPU the rest of the machine used meanwhile: interrupts (loopback networking),
            # and other processes — a noisy neighbour shows in the latter.
            irq_cores=irq / wall,
            other_cores=max(0.0, busy - irq - server_cpu - generator_cpu) / wall,
        )
        return run

    def throughput(self) -> None:
        self.start_baseline()
        stack = self.stack
        assert stack is not None
        assert self.baseline_proc is not None
        plan = self.plan
        proxy_pid = stack.proxy_pid
        server_cpus, generator_cpus = self.cpus or (None, None)
        targets = {
            "proxy": (stack.target.proxy, [proxy_pid]),
            "baseline": (self.baseline_url, [self.baseline_proc.pid]),
        }
        out: dict[str, Any] = {}
        cases = self.cases()
        try:
            if server_cpus is not None:
                pin(proxy_pid, server_cpus)
                pin(self.baseline_proc.pid, server_cpus)
            for number, case in enumerate(cases, 1):
                runs: dict[str, list[dict[str, Any]]] = {"proxy": [], "baseline": []}
                for side in ("proxy", "baseline"):
                    if plan.warmup_seconds:
                        url, pids = targets[side]
                        load = case.load(side)
                        self.measure(
                            url,
                            load,
                            pids,
                            seconds=plan.warmup_seconds,
                            connections=plan.connections,
                            cpus=generator_cpus,
                            label=f"{case.name} warm-up",
                        )
                for r in range(plan.rounds):
                    order = ("proxy", "baseline") if r % 2 == 0 else ("baseline", "proxy")
                    for side in order:
                        url, pids = targets[side]
                        load = case.load(side)
                        run = self.measure(
                            url,
                            load,
                            pids,
                            seconds=plan.run_seconds,
                            connections=plan.connections,
                            cpus=generator_cpus,
                            label=f"{case.name} {side}",
                        )
                        runs[side].append(run)
                        self.say(
                            f"throughput {number}/{len(cases)} {case.name:17} round {r + 1}/"
                            f"{plan.rounds} {side:8} {run['rps']:9,.0f} req/s  "
                            f"server {run['server_cores']:.2f} CPU  generator "
                            f"{run['generator_cores']:.2f} CPU  errors {run['errors']}"
                        )
                out[case.name] = summarize_case(case, runs)
                self.say(f"  → {case.name}: {describe_case(out[case.name])}")
        finally:
            if server_cpus is not None:
                pin(proxy_pid, None)
                pin(self.baseline_proc.pid, None)
        self.results["throughput"] = out

    def workers(self) -> None:
        stack = self.stack
        assert stack is not None
        plan = self.plan
        # Both fresh, started the same way: the stack's own proxy has been through the
        # streams and throughput phases (a bigger heap) and would not compare fairly.
        self.say("workers: starting fresh proxies with --workers 1 and --workers 2 …")
        url1, proc1 = stack.start_proxy(1)
        url2, proc2 = stack.start_proxy(2)
        try:
            stack.wait_served(url1, 1, 30)
            stack.wait_served(url2, 1, 30)
            server = {"Authorization": f"Bearer {stack.target.server_keys[1]}"}
            load = Load("GET", "/sdk/v1/flags", {**server, "If-None-Match": stack.etag})
            sides = {
                "1 worker": (url1, tree(proc1.pid)),
                "2 workers": (url2, tree(proc2.pid)),
            }
            self.remember({"proxy-1-worker": proc1.pid})
            self.remember({f"proxy-2-workers-{i}": pid for i, pid in enumerate(tree(proc2.pid))})
            runs: dict[str, list[dict[str, Any]]] = {k: [] for k in sides}
            for r in range(plan.rounds):
                order = list(sides) if r % 2 == 0 else list(reversed(sides))
                for side in order:
                    url, pids = sides[side]
                    run = self.measure(
                        url,
                        load,
                        pids,
                        seconds=plan.run_seconds,
                        connections=plan.connections,
                        threads=2,
                        label=f"workers {side}",
                    )
                    runs[side].append(run)
                    self.say(
                        f"workers round {r + 1}/{plan.rounds} {side:9} {run['rps']:9,.0f} req/s"
                        f"  servers {run['server_cores']:.2f} CPU  generator "
                        f"{run['generator_cores']:.2f} CPU"
                    )
        finally:
            stack.stop_extra(proc1)
            stack.stop_extra(proc2)
        one = median(r["rps"] for r in runs["1 worker"])
        two = median(r["rps"] for r in runs["2 workers"])
        self.results["workers"] = {
            "runs": runs,
            "one_rps": one,
            "two_rps": two,
            "speedup": two / one if one else None,
            "generator_cores": median(r["generator_cores"] for r in runs["2 workers"]),
            "server_cores": median(r["server_cores"] for r in runs["2 workers"]),
            "other_cores": median(r["other_cores"] for side in runs.values() for r in side),
            "target": 1.4,
        }
        self.say(f"  → workers: 2 workers = {two / one:.2f}× one worker")

    def metering(self) -> None:
        stack = self.stack
        assert stack is not None
        plan = self.plan
        self.say("metering: starting fresh proxies with metering on and off …")
        url_on, proc_on = stack.start_proxy(1, "metering-on")
        url_off, proc_off = stack.start_proxy(1, "metering-off", CRIVLINE_METERING="off")
        server_cpus, generator_cpus = self.cpus or (None, None)
        server = {"Authorization": f"Bearer {stack.target.server_keys[2]}"}
        loads = {
            "flags-200": Load("GET", "/sdk/v1/flags", server),
            "flags-304": Load("GET", "/sdk/v1/flags", {**server, "If-None-Match": stack.etag}),
        }
        sides = {"on": (url_on, [proc_on.pid]), "off": (url_off, [proc_off.pid])}
        self.remember({"proxy-metering-on": proc_on.pid, "proxy-metering-off": proc_off.pid})
        out: dict[str, Any] = {}
        try:
            stack.wait_served(url_on, 1, 30)
            stack.wait_served(url_off, 1, 30)
            for _url, pids in sides.values():
                if server_cpus is not None:
                    pin(pids[0], server_cpus)
            for name, load in loads.items():
                runs: dict[str, list[dict[str, Any]]] = {k: [] for k in sides}
                for side in sides:
                    if plan.warmup_seconds:
                        url, pids = sides[side]
                        self.measure(url, load, pids, seconds=plan.warmup_seconds,
                                     connections=plan.connections, cpus=generator_cpus,
                                     label=f"metering {name} warm-up")  # fmt: skip
                for r in range(plan.rounds):
                    order = list(sides) if r % 2 == 0 else list(reversed(sides))
                    for side in order:
                        url, pids = sides[side]
                        run = self.measure(url, load, pids, seconds=plan.run_seconds,
                                           connections=plan.connections, cpus=generator_cpus,
                                           label=f"metering {name} {side}")  # fmt: skip
                        runs[side].append(run)
                        self.say(
                            f"metering {name} round {r + 1}/{plan.rounds} {side:3} "
                            f"{run['rps']:9,.0f} req/s  server {run['server_cores']:.2f} CPU"
                        )
                on = median(r["rps"] for r in runs["on"])
                off = median(r["rps"] for r in runs["off"])
                cpu = {k: median(r["server_us_per_request"] or 0 for r in runs[k]) for k in runs}
                out[name] = {
                    "runs": runs, "on_rps": on, "off_rps": off,
                    "ratio": on / off if off else None,
                    "on_us_per_request": cpu["on"], "off_us_per_request": cpu["off"],
                }  # fmt: skip
                self.say(f"  → metering {name}: on = {on / off:.3f}× off" if off else "")
        finally:
            stack.stop_extra(proc_on)
            stack.stop_extra(proc_off)
        out["target"] = 0.97
        self.results["metering"] = out

    # -- locust ----------------------------------------------------------------------------

    def locust(
        self,
        scenario: str,
        name: str,
        users: int,
        seconds: float,
        *extra: str,
        cpus: set[int] | None = None,
        target: Path | None = None,
        rate: int | None = None,
        nice: int = 0,
        idle: bool = False,
    ) -> subprocess.Popen[bytes]:
        rate = rate or self.plan.spawn_rate
        cmd = [
            sys.executable,
            "-m",
            "locust",
            "-f",
            str(HERE / scenario),
            "--headless",
            *("-u", str(users), "-r", str(rate), "-t", f"{max(1, round(seconds))}s"),
            *("--stop-timeout", "2", "--only-summary", "--loglevel", "WARNING"),
            *("--csv", str(self.out / name), "--csv-full-history"),
            *("--json-file", str(self.out / name)),  # complete stats, written at exit
            *("--target", str(target or self.out / "target.json")),
            *extra,
        ]
        return self.spawn(cmd, f"{name}.log", cpus, nice, idle)

    @contextlib.contextmanager
    def proxy_pinned(self) -> Iterator[set[int] | None]:
        """The proxy on one CPU, for the locust phases; yields the load generator's CPUs.

        As in the throughput phase: the proxy gets a core of its own and locust the
        other, rather than the scheduler mixing them (PostgreSQL, syncd, Valkey, control
        and the writers stay free to run anywhere)."""
        stack = self.stack
        assert stack is not None
        if self.cpus is None:
            yield None
            return
        pid = stack.proxy_pid
        pin(pid, self.cpus[0])
        try:
            yield self.cpus[1]
        finally:
            pin(pid, None)

    def follow(self, proc: subprocess.Popen[bytes], name: str, limit: float) -> float:
        """Wait for a locust run (bounded), printing its progress; its CPU seconds."""
        deadline = time.monotonic() + limit
        history = self.out / f"{name}_stats_history.csv"
        next_print = time.monotonic() + 5
        while not exited(proc) and time.monotonic() < deadline:
            time.sleep(0.2)
            if time.monotonic() >= next_print:
                next_print += 5
                row = benchreport.last_history_row(history)
                if row:
                    self.say(
                        f"  {name}: {row['User Count']} users, {float(row['Requests/s']):,.0f} "
                        f"req/s, {row['Total Failure Count']} failures"
                    )
        return self.reap(proc, max(1.0, deadline - time.monotonic()) + 15)

    def scenario(self, key: str, scenario: str, users: int, seconds: float, *extra: str) -> None:
        self.say(f"scenario {key}: {users} users for {seconds:.0f}s …")
        with self.proxy_pinned() as cpus:
            proc = self.locust(scenario, key, users, seconds, *extra, cpus=cpus)
            writer = None
            if key == "polling":  # the changes that turn 304s into 200s
                writer = self.locust(
                    "writers.py", f"{key}-writers", 1, seconds, "--write-rate", "0.5"
                )
            cpu = self.follow(proc, key, seconds + 60)
            writer_cpu = self.reap(writer, 30) if writer is not None else 0.0
        self.record_scenario(key, users, proc, cpu)
        if writer is not None:
            self.record_scenario(f"{key}-writers", 1, writer, writer_cpu)

    def record_scenario(
        self, key: str, users: int, proc: subprocess.Popen[bytes], cpu: float
    ) -> None:
        rows = benchreport.read_stats(self.out / f"{key}.json")
        total = next((r for r in rows if r["name"] == "Aggregated"), None)
        self.results.setdefault("scenarios", {})[key] = {
            "users": users,
            "seconds": self.lifetimes.get(proc.pid, 0.0),
            "locust_cpu_seconds": cpu,
            "exit_code": proc.returncode,
            "rows": rows,
            "requests": total["requests"] if total else 0,
            "failures": total["failures"] if total else 0,
        }
        if total:
            self.say(
                f"  → {key}: {total['requests']:,} requests, {total['failures']} failures, "
                f"{total['rps']:,.0f} req/s, p50 {total['p50']} ms, p99 {total['p99']} ms"
            )

    def streams(
        self, count: int, write_seconds: float, write_rate: float, cpus: set[int] | None
    ) -> None:
        stack = self.stack
        assert stack is not None
        key = f"streams-{count}"
        proxy = stack.target.proxy
        proxy_pid = stack.proxy_pid
        samples = self.out / f"{key}-samples.json"
        spawn_limit = count / self.plan.spawn_rate + 60
        bound = spawn_limit + write_seconds + 60  # locust's own -t: never runs away
        gauge = 'crivline_proxy_streams_open{kind="sdk"}'
        # The previous phase's streams must be gone first: the proxy closing them while
        # this phase counts its own would start the writes before every client is in.
        closed_by = time.monotonic() + 60
        while (left := metrics(proxy).get(gauge, 0.0)) > 0:
            if time.monotonic() > closed_by:
                raise BenchError(f"{key}: {left:.0f} streams of an earlier phase still open")
            time.sleep(0.2)
        rss_before = rss_bytes(proxy_pid)
        self.say(f"streams: opening {count:,} SSE streams …")
        opened_at = time.monotonic()
        proc = self.locust(
            "streams.py", key, count, bound, "--samples-file", str(samples), cpus=cpus
        )
        deadline = time.monotonic() + spawn_limit
        open_now = 0.0
        next_print = time.monotonic() + 5
        while True:
            open_now = metrics(proxy).get(gauge, 0.0)
            if open_now >= count:
                break
            if exited(proc):
                raise BenchError(f"{key}: locust exited early ({proc.returncode}); see logs/")
            if time.monotonic() > deadline:
                raise BenchError(f"{key}: only {open_now:.0f} of {count} streams opened")
            if time.monotonic() >= next_print:
                next_print += 5
                self.say(f"  {open_now:,.0f} streams open")
            time.sleep(0.25)
        open_seconds = time.monotonic() - opened_at
        rss_open = rss_bytes(proxy_pid)
        per_stream = (rss_open - rss_before) / count
        self.say(
            f"  {count:,} streams open in {open_seconds:.1f}s; proxy RSS "
            f"{rss_before / 2**20:.1f} → {rss_open / 2**20:.1f} MiB = "
            f"{per_stream / 1024:.1f} KiB per idle stream"
        )
        lag_before = metrics(proxy)
        stages_before = {"proxy": lag_before, "syncd": metrics(stack.syncd_url)}
        cpu_before = tree_cpu([proxy_pid])
        busy_before, wall = machine_busy_seconds()[0], time.monotonic()
        self.say(f"  writers: {write_rate:g} changes/s for {write_seconds:.0f}s …")
        writer = self.locust(
            "writers.py", f"{key}-writers", 1, write_seconds, "--write-rate", str(write_rate)
        )
        writer_cpu = self.follow(writer, f"{key}-writers", write_seconds + 60)
        drained = self.drain(proxy)
        proxy_cpu = tree_cpu([proxy_pid]) - cpu_before
        machine_cores = (machine_busy_seconds()[0] - busy_before) / (time.monotonic() - wall)
        lag_after = metrics(proxy)
        stages_after = {"proxy": lag_after, "syncd": metrics(stack.syncd_url)}
        locust_cpu = self.terminate(proc)
        self.record_scenario(key, count, proc, locust_cpu)
        self.record_scenario(f"{key}-writers", 1, writer, writer_cpu)
        doc = json.loads(samples.read_text()) if samples.exists() else {"latency": []}
        latencies = sorted(doc["latency"])
        reads = sorted(doc.get("read_latency", []))
        result = {
            "streams": count,
            "open_seconds": open_seconds,
            "rss_before": rss_before,
            "rss_open": rss_open,
            "rss_per_stream": per_stream,
            "write_rate": write_rate,
            "write_seconds": write_seconds,
            "writes": self.results["scenarios"][f"{key}-writers"]["requests"],
            "samples": len(latencies),
            "stream_stats": doc.get("stats", {}),
            "drained": drained,
            "proxy_cpu_seconds": proxy_cpu,
            "machine_cores": machine_cores,
            "proxy_side": benchreport.histogram_quantiles(
                lag_before, lag_after, "crivline_proxy_propagation_lag_seconds_bucket"
            ),
            "stages": benchreport.stage_quantiles(stages_before, stages_after),
            **benchreport.quantiles_ms(latencies),
            "read": benchreport.quantiles_ms(reads),
        }
        self.results.setdefault("propagation", {})[str(count)] = result
        benchreport.save_samples(self.out / f"{key}-latency.txt", latencies)
        benchreport.save_samples(self.out / f"{key}-read-latency.txt", reads)
        with contextlib.suppress(OSError):
            samples.unlink()  # the sorted latencies are kept in the .txt
        if latencies:
            self.say(
                f"  → {key}: {len(latencies):,} patches received, propagation p50 "
                f"{result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, max "
                f"{result['max_ms']:.1f} ms (read by locust: p99 {result['read']['p99_ms']:.1f} ms)"
            )
        else:
            self.say(f"  → {key}: no patch received")

    def client_priority(self) -> dict[str, Any]:
        """How the streams-workers clients are spawned (see ``CLIENT_SCHEDULING``)."""
        if self.client_scheduling == "idle":
            return {"idle": True}
        return {"nice": CLIENT_NICE}

    def streams_workers(
        self, count: int, clients: int, write_seconds: float, write_rate: float
    ) -> None:
        """``count`` SSE streams on a fresh ``--workers 2`` proxy, held by ``clients``
        locust processes (one process cannot hold 20,000: its open-files limit, and one
        gevent loop reading them all), while writers change flags; the samples of every
        client process are merged. Nothing pinned: the workers need both CPUs; instead
        the clients yield the CPU to them (``CLIENT_SCHEDULING``), so that on a saturated
        machine the generator waits for the server rather than the other way round (a
        patch's arrival is the kernel's time stamp, so a client that reads late still
        measures when the bytes reached it)."""
        stack = self.stack
        assert stack is not None
        key = f"streams-workers-{count}"
        token = secrets.token_urlsafe(32)
        self.say(f"{key}: a fresh --workers 2 proxy, {count:,} streams from {clients} clients …")
        url, proc = stack.start_proxy(2, key, CRIVLINE_OPERATOR_TOKEN=token)
        load_start = os.getloadavg()
        try:
            stack.wait_served(url, 1, 30)
            workers = sorted(p for p in tree(proc.pid) if p != proc.pid)
            if len(workers) != 2:
                raise BenchError(f"{key}: expected 2 worker processes, found {workers}")
            self.remember({f"proxy-{key}-{i}": pid for i, pid in enumerate([proc.pid, *workers])})
            ready_by = time.monotonic() + 30
            while True:  # each worker loads the environment on its own
                pages = worker_pages(url, token, 2, stack.target.server_keys[-1])
                if set(pages) != set(workers):
                    raise BenchError(f"{key}: /status named pids {sorted(pages)}, not {workers}")
                if all(status["servedVersion"] > 0 for status, _m in pages.values()):
                    break
                if time.monotonic() > ready_by:
                    raise BenchError(f"{key}: a worker serves no environment after 30 s")
                time.sleep(0.2)
            target = self.out / f"{key}-target.json"
            target.write_text(replace(stack.target, proxy=url).to_json())
            target.chmod(0o600)
            rss_before = {pid: rss_bytes(pid) for pid in workers}
            shares = [count // clients + (1 if i < count % clients else 0) for i in range(clients)]
            rate = max(1, self.plan.spawn_rate // clients)
            spawn_limit = max(shares) / rate + 90
            bound = spawn_limit + write_seconds + 60
            procs = []
            for i, share in enumerate(shares):
                samples = self.out / f"{key}-c{i}-samples.json"
                procs.append(self.locust("streams.py", f"{key}-c{i}", share, bound,
                                         "--samples-file", str(samples), target=target,
                                         rate=rate, **self.client_priority()))  # fmt: skip
            opened_at = time.monotonic()
            policies = sorted({_policy_name(p.pid) for p in procs})
            groups = sorted({_autogroup_nice(p.pid) for p in procs}, key=str)
            deadline = opened_at + spawn_limit
            next_print = opened_at + 5
            while True:
                pages = worker_pages(url, token, 2)
                # each worker's own streams (its status page; /metrics is the whole edge's)
                per_worker = {
                    pid: float(status["streamsByKind"].get("sdk", 0))
                    for pid, (status, _page) in pages.items()
                }
                if sum(per_worker.values()) >= count:
                    break
                if any(exited(p) for p in procs):
                    raise BenchError(f"{key}: a locust client exited early; see logs/")
                if time.monotonic() > deadline:
                    raise BenchError(f"{key}: only {per_worker} of {count} streams opened")
                if time.monotonic() >= next_print:
                    next_print += 5
                    self.say(f"  {sum(per_worker.values()):,.0f} streams open {per_worker}")
                time.sleep(0.5)
            open_seconds = time.monotonic() - opened_at
            rss_open = {pid: rss_bytes(pid) for pid in workers}
            growth = sum(rss_open.values()) - sum(rss_before.values())
            self.say(
                f"  {count:,} streams open in {open_seconds:.1f}s, per worker "
                f"{ {p: int(v) for p, v in per_worker.items()} }; workers' RSS growth "
                f"{growth / 2**20:.1f} MiB = {growth / count / 1024:.1f} KiB per idle stream"
            )
            before = freshest([page for _status, page in pages.values()])
            syncd_before = metrics(stack.syncd_url)
            cpu_before = {pid: cpu_seconds(pid) for pid in workers}
            clients_before = sum(cpu_seconds(p.pid) for p in procs)
            busy_before, wall = machine_busy_seconds()[0], time.monotonic()
            self.say(f"  writers: {write_rate:g} changes/s for {write_seconds:.0f}s …")
            writer = self.locust(
                "writers.py", f"{key}-writers", 1, write_seconds, "--write-rate", str(write_rate)
            )
            writer_cpu = self.follow(writer, f"{key}-writers", write_seconds + 60)
            drained = self.drain_workers(url, token, self.central_version())
            writing = time.monotonic() - wall
            clients_writing = sum(cpu_seconds(p.pid) for p in procs) - clients_before
            machine_cores = (machine_busy_seconds()[0] - busy_before) / writing
            worker_cpu = {pid: cpu_seconds(pid) - cpu_before[pid] for pid in workers}
            after = freshest([page for _s, page in worker_pages(url, token, 2).values()])
            syncd_after = metrics(stack.syncd_url)
            client_cpu = [self.terminate(p) for p in procs]
        finally:
            stack.stop_extra(proc)
        load_end = os.getloadavg()
        for i, p in enumerate(procs):
            self.record_scenario(f"{key}-c{i}", shares[i], p, client_cpu[i])
        self.record_scenario(f"{key}-writers", 1, writer, writer_cpu)
        docs = []
        for i in range(clients):
            path = self.out / f"{key}-c{i}-samples.json"
            docs.append(json.loads(path.read_text()) if path.exists() else {})
            with contextlib.suppress(OSError):
                path.unlink()
        merged = benchreport.merge_samples(docs)
        latencies, reads = sorted(merged["latency"]), sorted(merged["read_latency"])
        versions = len(set(merged["version"]))
        patch = 'crivline_proxy_stream_events_total{event="patch",kind="sdk"}'
        client_seconds = [self.lifetimes.get(p.pid, 0.0) for p in procs]
        result = {
            "streams": count,
            "workers": 2,
            "clients": clients,
            "open_files_limit": self.results["machine"].get("open_files_limit"),
            "open_seconds": open_seconds,
            "rss_before": sum(rss_before.values()),
            "rss_open": sum(rss_open.values()),
            "rss_per_stream": growth / count,
            "per_worker": {
                str(pid): {
                    "streams_open": per_worker.get(pid, 0.0),
                    "rss_before": rss_before[pid],
                    "rss_open": rss_open[pid],
                    "cpu_seconds": worker_cpu[pid],
                }
                for pid in workers
            },
            "write_rate": write_rate,
            "write_seconds": write_seconds,
            "writes": self.results["scenarios"][f"{key}-writers"]["requests"],
            "versions": versions,
            "expected": versions * count,  # every version to every stream
            # the workers' writes that carried patches: one write carries several when a
            # worker applies several versions at once, so this is ≤ the patches received
            "patch_writes": after.get(patch, 0.0) - before.get(patch, 0.0),
            "proxy_side": benchreport.histogram_quantiles(
                before, after, "crivline_proxy_propagation_lag_seconds_bucket"
            ),
            "samples": len(latencies),
            "stream_stats": merged["stats"],
            "drained": drained,
            "proxy_cpu_seconds": sum(worker_cpu.values()),
            "machine_cores": machine_cores,
            "client_cpu_seconds": sum(client_cpu),
            "client_scheduling": self.client_scheduling,
            "client_policies": policies,  # as the kernel reported them for the clients
            "client_autogroup_nice": groups,  # their session groups' (None: no autogroups)
            "client_nice": CLIENT_NICE if self.client_scheduling == "nice" else 0,
            "client_cores": sum(client_cpu) / max(max(client_seconds), 1.0),
            # while the writers ran (and the last patches went out): what the stream
            # clients took from the two cores the workers also run on
            "writing_seconds": writing,
            "client_cores_writing": clients_writing / writing,
            "worker_cores_writing": sum(worker_cpu.values()) / writing,
            "load_average": {"start": load_start, "end": load_end},
            "stages": benchreport.stage_quantiles(
                {"proxy": before, "syncd": syncd_before},
                {"proxy": after, "syncd": syncd_after},
            ),
            **benchreport.quantiles_ms(latencies),
            "read": benchreport.quantiles_ms(reads),
        }
        self.results["streams_workers"] = result
        benchreport.save_samples(self.out / f"{key}-latency.txt", latencies)
        self.say(
            f"  → {key}: {len(latencies):,} patches received "
            f"(in {result['patch_writes']:,.0f} writes), "
            f"{result['expected']:,} expected ({versions} versions × {count:,}), "
            f"p50 {_ms(result['p50_ms'])}, p99 {_ms(result['p99_ms'])}; clients "
            f"{sum(client_cpu):.1f} CPU s; workers {result['proxy_cpu_seconds']:.1f} CPU s; "
            f"load average {load_end[0]:.2f}"
        )

    def central_version(self) -> int:
        """The bench environment's version in the central database (the last write's)."""
        stack = self.stack
        assert stack is not None
        target = stack.target
        path = f"/api/v1/projects/{target.project}/environments/{target.environment}"
        status, _h, body = http("GET", target.control + path, token=target.token)
        if status != 200:
            raise BenchError(f"GET {path}: HTTP {status}: {body[:200]!r}")
        return int(json.loads(body)["version"])

    def drain_workers(self, url: str, token: str, version: int, limit: float = 60.0) -> bool:
        """Until every worker holds ``version`` and none sends patches any more (the last
        change is out everywhere); False if that takes longer than ``limit``."""
        stack = self.stack
        assert stack is not None
        name = 'crivline_proxy_stream_events_total{event="patch",kind="sdk"}'
        key = stack.target.server_keys[-1]

        def reading() -> tuple[int, float]:
            pages = worker_pages(url, token, 2, key).values()
            served = min(int(status["servedVersion"]) for status, _page in pages)
            return served, freshest([page for _status, page in pages]).get(name, 0.0)

        deadline = time.monotonic() + limit
        last = reading()
        while time.monotonic() < deadline:
            time.sleep(1.0)
            now = reading()
            if now[0] >= version and now == last:
                return True
            last = now
        return False

    def drain(self, proxy: str, limit: float = 15.0) -> bool:
        """Until the proxy has stopped sending patches (the last change is out)."""
        name = 'crivline_proxy_stream_events_total{event="patch",kind="sdk"}'
        deadline = time.monotonic() + limit
        last = metrics(proxy).get(name, 0.0)
        while time.monotonic() < deadline:
            time.sleep(0.5)
            now = metrics(proxy).get(name, 0.0)
            if now == last:
                return True
            last = now
        return False

    def scenarios(self) -> None:
        plan = self.plan
        users, seconds = plan.polling
        self.scenario("polling", "polling.py", users, seconds, "--poll-interval", "1")
        users, seconds = plan.ofrep
        self.scenario("ofrep", "ofrep.py", users, seconds)
        users, seconds = plan.edge_day
        rates = ("--poll-interval", "2", "--eval-interval", "0.5", "--bulk-interval", "2")
        self.scenario("edge-day", "edge_day.py", users, seconds, *rates, "--write-rate", "0.5")

    # -- the whole run -----------------------------------------------------------------------

    def run(self) -> Path:
        plan = self.plan
        self.say(f"bench ({plan.mode}) writing to {self.out}")
        try:
            self.setup()
            self.results["phases"] = list(self.phases)
            # Streams first: the memory per stream is measured on a proxy that has not yet
            # been through the throughput phases (whose freed memory it would reuse).
            if "streams" in self.phases:
                for count, seconds, rate in plan.stream_phases:
                    with self.proxy_pinned() as cpus:
                        self.streams(count, seconds, rate, cpus)
            if "streams-workers" in self.phases:
                self.streams_workers(*plan.worker_streams)
            if "throughput" in self.phases:
                self.throughput()
            if "workers" in self.phases:
                self.workers()
            if "metering" in self.phases:
                self.metering()
            if "scenarios" in self.phases:
                self.scenarios()
        except BaseException as exc:
            self.results["error"] = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            self.cleanup()
            self.results["seconds"] = time.monotonic() - self.started
            self.results["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
            (self.out / "results.json").write_text(json.dumps(self.results, indent=1))
            report = benchreport.write(self.results, self.out)  # partial when it failed
        return report


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} ms"


def summarize_case(case: Case, runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    proxy = median(r["rps"] for r in runs["proxy"])
    base = median(r["rps"] for r in runs["baseline"])
    proxy_us = median(r["server_us_per_request"] or 0 for r in runs["proxy"])
    base_us = median(r["server_us_per_request"] or 0 for r in runs["baseline"])
    per_response = median(r["bytes_per_response"] for r in runs["proxy"])
    path_ok = None
    if case.small_answers is not None:
        path_ok = per_response < 1000 if case.small_answers else per_response > 1000
    return {
        "title": case.title,
        "runs": runs,
        "proxy_rps": proxy,
        "baseline_rps": base,
        "ratio": proxy / base if base else None,
        "cpu_ratio": base_us / proxy_us if proxy_us else None,
        "proxy_us_per_request": proxy_us,
        "baseline_us_per_request": base_us,
        "proxy_bytes_per_response": per_response,
        "path_ok": path_ok,
        "errors": sum(r["errors"] for side in runs.values() for r in side),
        "generator_cores": median(r["generator_cores"] for side in runs.values() for r in side),
        "server_cores": median(r["server_cores"] for r in runs["proxy"]),
        "other_cores": median(r["other_cores"] for side in runs.values() for r in side),
        "irq_cores": median(r["irq_cores"] for side in runs.values() for r in side),
        "target_ratio": case.target_ratio,
        "target_rps": case.target_rps,
    }


def describe_case(summary: dict[str, Any]) -> str:
    text = f"proxy {summary['proxy_rps']:,.0f} req/s, baseline {summary['baseline_rps']:,.0f}"
    if summary["ratio"] is not None:
        text += f", ratio {summary['ratio']:.2f}"
    return text


def machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if "model name" in line),
        platform.processor() or "unknown",
    )
    meminfo = Path("/proc/meminfo").read_text() if Path("/proc/meminfo").exists() else ""
    mem_kb = next((int(x.split()[1]) for x in meminfo.splitlines() if x.startswith("MemTotal")), 0)
    versions = {}
    for package in ("aiohttp", "uvloop", "locust", "orjson", "redis"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "memory_gib": round(mem_kb / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": versions,
        "load_average_at_start": os.getloadavg(),
    }


def _policy_name(pid: int) -> str:
    """A process's scheduling policy, by name ("gone" when it has exited)."""
    try:
        policy = os.sched_getscheduler(pid)
    except ProcessLookupError:
        return "gone"
    names = {os.SCHED_OTHER: "SCHED_OTHER", os.SCHED_IDLE: "SCHED_IDLE"}
    return names.get(policy, str(policy))


def _autogroup_nice(pid: int) -> int | None:
    """The niceness of a process's autogroup (``/proc/PID/autogroup``: "/autogroup-N nice
    K"); None where the kernel has no autogroups."""
    try:
        with open(f"/proc/{pid}/autogroup") as group:
            return int(group.read().split()[-1])
    except (OSError, ValueError, IndexError):
        return None


def main() -> int:
    parser = argparse.ArgumentParser(description="Crivline Edge load benchmark")
    parser.add_argument("--smoke", action="store_true", help="a few seconds per phase")
    parser.add_argument("--out", type=Path, help="report folder (default loadtests/results/…)")
    parser.add_argument("--generator", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--keep", action="store_true", help="keep the stack's data folder")
    parser.add_argument(
        "--client-scheduling",
        choices=CLIENT_SCHEDULING,
        default=CLIENT_SCHEDULING[0],
        help="how the streams-workers phase's clients yield the CPU to the workers: "
        f"SCHED_IDLE (default) or niceness +{CLIENT_NICE}",
    )
    parser.add_argument(
        "--phases",
        default=",".join(PHASES),
        help=f"comma-separated subset of {','.join(PHASES)} (default: all)",
    )
    args = parser.parse_args()
    phases = tuple(p.strip() for p in args.phases.split(",") if p.strip())
    unknown = set(phases) - set(PHASES)
    if unknown:
        parser.error(f"unknown phases: {', '.join(sorted(unknown))}")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = (args.out or RESULTS / f"{stamp}{'-smoke' if args.smoke else ''}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    bench = Bench(
        SMOKE if args.smoke else FULL,
        out,
        args.generator,
        args.keep,
        phases,
        client_scheduling=args.client_scheduling,
    )

    def stop(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, stop)
    try:
        report = bench.run()
    except (BenchError, KeyboardInterrupt) as exc:
        print(f"bench failed: {exc}", file=sys.stderr, flush=True)
        return 1
    if not args.out:
        latest = RESULTS / "latest"
        with contextlib.suppress(OSError):
            if latest.is_symlink() or latest.exists():
                latest.unlink()
            latest.symlink_to(out.name)
    print(f"\nreport: {report}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
