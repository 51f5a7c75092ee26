"""Instructions per request on the polling paths, counted by valgrind's callgrind.

Throughput on a shared two-core machine swings ±40% between runs of the same code, far
more than the few percent a feature costs. The CPU instructions a request executes do
not depend on the machine's other load, so this counts them: each server runs under
``valgrind --tool=callgrind``; once it serves and is warmed up, its counters are read
(``callgrind_control``) over an idle window and then over N requests on one keep-alive
connection. What one request costs is the second count, less the idle rate (timers that
run whatever the traffic) over the time the requests took, divided by N.

First, the quota check and the meter alone, as the evaluation gate calls them for each
request, metering on and off: an exact count (no server, no timers). Then the servers.
Variants: the proxy as shipped, the proxy with ``CRIVLINE_METERING=off`` (no usage
counted, no quota or stream-cap check) and the bench's bare aiohttp baseline, each on
``GET /sdk/v1/flags`` answered 304 (``If-None-Match``) and 200, and on the OFREP single
evaluation (``POST /ofrep/v1/evaluate/flags/{key}``, a new context every request; the
baseline's counterpart is ``POST /json``, as in the bench).

    .venv/bin/python loadtests/instructions.py [--requests 1000] [--repeat 3] [--out DIR]
        [--no-metering-off]

Needs ``valgrind`` (Debian: ``apt-get install valgrind``). Takes a few minutes: Python
runs ~50× slower under callgrind.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import benchstack
import ltflags
from bench import CONTEXT
from benchstack import BenchError, Stack, free_port, wait_listening

WARM_UP = 100  # requests before counting
IDLE_SECONDS = 20.0  # the idle window


def instructions(pid: int) -> int:
    """The instructions ``pid`` (running under callgrind) executed since its counters were
    last zeroed, all threads."""
    out = subprocess.run(
        ["callgrind_control", "-e", "Ir", str(pid)], capture_output=True, text=True, check=True
    ).stdout
    total, seen = 0, False
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "Th" and parts[1].isdigit():
            total += int(parts[2].replace(",", ""))
            seen = True
    if not seen:
        raise BenchError(f"callgrind_control found no counters for pid {pid}:\n{out}")
    return total


def zero(pid: int) -> None:
    subprocess.run(["callgrind_control", "-z", str(pid)], capture_output=True, check=True)


@dataclass(frozen=True)
class Request:
    """What one case sends: ``body`` (``{n}``: a number new for every request) makes it
    a POST."""

    path: str
    headers: dict[str, str]
    status: int
    body: str | None = None


def drive(port: int, request: Request, count: int, start: int = 0) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    path, headers, status, body = request.path, request.headers, request.status, request.body
    try:
        for n in range(start, start + count):
            if body is None:
                conn.request("GET", path, headers=headers)
            else:
                conn.request("POST", path, body.replace("{n}", str(n)).encode(), headers)
            response = conn.getresponse()
            response.read()
            if response.status != status:
                raise BenchError(f"expected HTTP {status}, got {response.status}")
    finally:
        conn.close()


@dataclass
class Measured:
    per_request: float
    idle_per_second: float
    requests_seconds: float


def measure(
    argv: list[str],
    env: dict[str, str],
    port: int,
    out: Path,
    prepare: Callable[[], None],
    request: Request,
    count: int,
) -> Measured:
    """Start ``argv`` under callgrind, ``prepare`` it, warm it up, count an idle window and
    ``count`` requests, stop it."""
    log = open(out.with_suffix(".log"), "wb")  # noqa: SIM115 - the child holds it
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *argv],
        env={**env, "PYTHONHASHSEED": "0"},
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    log.close()
    try:
        wait_listening(port, proc, 600)
        prepare()
        drive(port, request, WARM_UP)
        zero(proc.pid)
        started = time.monotonic()
        time.sleep(IDLE_SECONDS)  # the window itself is what is measured
        idle = instructions(proc.pid) / (time.monotonic() - started)
        zero(proc.pid)
        started = time.monotonic()
        drive(port, request, count, WARM_UP)
        seconds = time.monotonic() - started
        busy = instructions(proc.pid)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(300)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
    return Measured((busy - idle * seconds) / count, idle, seconds)


# The quota check and the meter as the evaluation gate runs them per request
# (proxy.access): a tenant on a plan with a daily limit, the UTC day read once.
_GATE = """
import sys, uuid
from redis.asyncio import Redis
from crivline.keyspace import Keyspace
from crivline.plans import EdgePlan
from proxy.metering import Meter, today
from proxy.quota import PlanBook, Quota
tenant, environment = str(uuid.uuid4()), str(uuid.uuid4())
count, enabled = int(sys.argv[1]), sys.argv[2] == "on"
redis, keyspace = Redis(), Keyspace("bench:", "edge")  # never contacted
meter, plans = Meter(redis, keyspace, enabled=enabled), PlanBook(redis, keyspace)
plans.plans[tenant] = EdgePlan("free", 10**15, None)
quota = Quota(plans, meter, enforce=enabled)
for _ in range(count):
    day = today()
    quota.refusal(tenant, ofrep=False, day=day)
    meter.count(environment, "poll", tenant, day)
"""
GATE_CALLS = 100_000


def gate_instructions(out: Path) -> dict[str, float]:
    """Instructions per request of the quota check and the meter, metering on and off
    (``CRIVLINE_METERING``): no server, no timers, so the count is exact."""
    script = out / "gate.py"
    script.write_text(_GATE)
    totals: dict[str, int] = {}
    for label, count, enabled in (("start", 0, "on"), ("on", GATE_CALLS, "on"),
                                  ("off", GATE_CALLS, "off")):  # fmt: skip
        target = out / f"gate-{label}.callgrind"
        subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={target}",
             sys.executable, str(script), str(count), enabled],
            env={**os.environ, "PYTHONHASHSEED": "0"}, capture_output=True, check=True,
        )  # fmt: skip
        totals[label] = callgrind_total(target)
    on = (totals["on"] - totals["start"]) / GATE_CALLS
    off = (totals["off"] - totals["start"]) / GATE_CALLS
    return {"on": on, "off": off, "metering": on - off}


def callgrind_total(path: Path) -> int:
    """The ``totals:`` (or ``summary:``) instruction count of a callgrind output file."""
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith(("totals:", "summary:")):
            return int(line.split()[1])
    raise BenchError(f"{path}: no totals line")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs per server and case (the median counts)"
    )
    parser.add_argument(
        "--no-metering-off",
        action="store_true",
        help="skip the proxy with metering off (a third fewer runs)",
    )
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (Debian: apt-get install valgrind)", file=sys.stderr)
        return 1
    out = args.out or Path(tempfile.mkdtemp(prefix="crivline-instructions-"))
    out.mkdir(parents=True, exist_ok=True)
    stack = Stack(say=lambda line: print(line, flush=True))
    results: dict[str, Any] = {"requests": args.requests}
    gate = results["gate"] = gate_instructions(out)
    print(
        f"quota check + meter per request: {gate['on']:,.0f} instructions with metering on, "
        f"{gate['off']:,.0f} off: metering adds {gate['metering']:,.0f}",
        flush=True,
    )
    try:
        stack.start()
        stack.provision()
        key = stack.target.server_keys[2]
        auth = {"Authorization": f"Bearer {key}"}
        json_body = {"Content-Type": "application/json"}
        baseline_etag = f'"{hashlib.blake2b(stack.flag_set_bytes, digest_size=8).hexdigest()}"'
        flags = "/sdk/v1/flags"
        single = f"/ofrep/v1/evaluate/flags/{ltflags.TARGETED_FLAG}"
        # case -> (the proxy's request, the baseline's)
        cases = {
            "304": (
                Request(flags, auth | {"If-None-Match": stack.etag}, 304),
                Request("/bytes", {"If-None-Match": baseline_etag}, 304),
            ),
            "200": (Request(flags, auth, 200), Request("/bytes", {}, 200)),
            "ofrep-single": (
                Request(single, auth | json_body, 200, CONTEXT),
                Request("/json", json_body, 200, CONTEXT),
            ),
        }

        def proxy_argv(metering: str) -> tuple[list[str], dict[str, str], int]:
            port = free_port()
            env = dict(stack.env)
            env.update(
                {
                    "CRIVLINE_REDIS_URL": stack.doc["redis_url"],
                    "CRIVLINE_PROXY_PORT": str(port),
                    "CRIVLINE_PROXY_WORKERS": "1",
                    "CRIVLINE_METERING": metering,
                }
            )
            return [sys.executable, "-m", "crivline", "proxy"], env, port

        def baseline_argv() -> tuple[list[str], dict[str, str], int]:
            port = free_port()
            body = out / "flagset.json"
            body.write_bytes(stack.flag_set_bytes)
            script = Path(benchstack.__file__).parent / "baseline.py"
            argv = [sys.executable, str(script), "--port", str(port), "--body-file", str(body)]
            return argv, dict(os.environ), port

        variants = {
            "proxy, metering on": lambda: proxy_argv("on"),
            "proxy, metering off": lambda: proxy_argv("off"),
            "baseline": baseline_argv,
        }
        if args.no_metering_off:
            del variants["proxy, metering off"]
        measured: dict[tuple[str, str], list[Measured]] = {}
        for round_ in range(args.repeat):  # rounds alternate the servers
            for name, make in variants.items():
                for case, (proxy_request, baseline_request) in cases.items():
                    request = baseline_request if name == "baseline" else proxy_request
                    slug = f"{name.replace(', ', '-').replace(' ', '-')}-{case}-{round_}"
                    for attempt in range(3):  # a free port can be taken before the server binds
                        argv, env, port = make()
                        url = f"http://127.0.0.1:{port}"

                        def prepare(url: str = url, name: str = name) -> None:
                            if name != "baseline":
                                stack.wait_served(url, 1, 600)

                        try:
                            got = measure(
                                argv, env, port, out / slug, prepare, request, args.requests,
                            )  # fmt: skip
                            break
                        except BenchError as exc:
                            if attempt == 2 or "during start-up" not in str(exc):
                                raise
                    measured.setdefault((name, case), []).append(got)
                    print(
                        f"round {round_ + 1}: {name:20} {case}: {got.per_request:,.0f} "
                        f"instructions per request ({args.requests} requests in "
                        f"{got.requests_seconds:.0f} s; idle {got.idle_per_second:,.0f}/s)",
                        flush=True,
                    )
        for (name, case), runs in measured.items():
            results.setdefault(name, {})[case] = statistics.median(r.per_request for r in runs)
            results.setdefault("runs", {})[f"{name} {case}"] = [r.per_request for r in runs]
    finally:
        stack.stop()
    for case in ("304", "200", "ofrep-single"):
        on = results["proxy, metering on"][case]
        base = results["baseline"][case]
        ratios = results[f"ratios {case}"] = {
            "metering cost (gate's count / request)": gate["metering"] / on,
            "baseline/proxy (throughput ratio if CPU-bound)": base / on,
        }
        line = f"{case}: {on:,.0f} instructions per request (baseline {base:,.0f}"
        if "proxy, metering off" in results:
            off = results["proxy, metering off"][case]
            ratios["metering cost (on/off - 1)"] = on / off - 1
            line += f", metering off {off:,.0f}: {100 * (on / off - 1):+.1f}%, whole servers"
        print(
            f"{line}); metering adds {100 * gate['metering'] / on:.1f}% (the gate's exact "
            f"count); baseline/proxy = {base / on:.2f}"
        )
    (out / "instructions.json").write_text(json.dumps(results, indent=2))
    print(f"results: {out / 'instructions.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
