"""The bench report: ``report.md`` (summary tables, targets) and PNG plots.

Reads what :mod:`bench` gathered (``results.json``'s content) plus the locust CSVs in
the same folder. The plots need matplotlib (``make bench-deps``); without it the report
says so and is otherwise complete. Pure stdlib apart from that optional import.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

KIB = 1024


# -- reading --------------------------------------------------------------------------------


def _number(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        return math.nan


def _percentile(times: dict[str, int], count: int, q: float) -> float:
    """From locust's histogram of rounded response times (ms -> requests)."""
    if not count:
        return math.nan
    rank = math.ceil(q * count)
    seen = 0
    for value, n in sorted((float(k), v) for k, v in times.items()):
        seen += n
        if seen >= rank:
            return value
    return math.nan


def _span(entries: list[dict[str, Any]]) -> float:
    starts = [e["start_time"] for e in entries if e["num_requests"]]
    ends = [e["last_request_timestamp"] for e in entries if e["num_requests"]]
    return max(ends) - min(starts) if starts and ends else 0.0


def _row(kind: str, name: str, entries: list[dict[str, Any]], span: float) -> dict[str, Any]:
    count = sum(e["num_requests"] for e in entries)
    times: dict[str, int] = {}
    for entry in entries:
        for value, n in entry["response_times"].items():
            times[value] = times.get(value, 0) + n
    return {
        "type": kind,
        "name": name,
        "requests": count,
        "failures": sum(e["num_failures"] for e in entries),
        "rps": count / span if span > 0 else math.nan,
        "avg": sum(e["total_response_time"] for e in entries) / count if count else math.nan,
        "p50": _percentile(times, count, 0.50),
        "p95": _percentile(times, count, 0.95),
        "p99": _percentile(times, count, 0.99),
        "max": max((e["max_response_time"] or 0 for e in entries), default=math.nan),
        "size": sum(e["total_content_length"] for e in entries) / count if count else math.nan,
    }


def read_stats(path: Path) -> list[dict[str, Any]]:
    """A locust ``--json-file``: one row per request name, then ``Aggregated``. (The
    JSON is written at exit with every request; the ``_stats.csv`` lags by up to a
    second of requests.)"""
    if not path.exists():
        return []
    entries = json.loads(path.read_text())
    span = _span(entries)  # the whole run's, so every row's rate has the same base
    rows = [_row(e["method"] or "", e["name"], [e], span) for e in entries]
    rows.sort(key=lambda r: (r["type"], r["name"]))
    if entries:
        rows.append(_row("", "Aggregated", entries, span))
    return rows


def per_second(path: Path) -> list[tuple[int, int]]:
    """Requests completed in each second of a locust run (from its ``--json-file``)."""
    if not path.exists():
        return []
    counts: dict[int, int] = {}
    for entry in json.loads(path.read_text()):
        for second, n in entry["num_reqs_per_sec"].items():
            counts[int(second)] = counts.get(int(second), 0) + n
    return sorted(counts.items())


def history(path: Path) -> list[dict[str, str]]:
    """The aggregated rows of a locust ``*_stats_history.csv``, one per second."""
    if not path.exists():
        return []
    with path.open() as handle:
        return [row for row in csv.DictReader(handle) if row.get("Name") == "Aggregated"]


def last_history_row(path: Path) -> dict[str, str] | None:
    rows = history(path)
    return rows[-1] if rows else None


def quantiles_ms(sorted_seconds: list[float]) -> dict[str, float | None]:
    if not sorted_seconds:
        return {"p50_ms": None, "p90_ms": None, "p99_ms": None, "p999_ms": None, "max_ms": None}
    n = len(sorted_seconds)

    def at(q: float) -> float:
        return sorted_seconds[min(n - 1, math.ceil(q * n) - 1)] * 1000

    return {
        "p50_ms": at(0.50),
        "p90_ms": at(0.90),
        "p99_ms": at(0.99),
        "p999_ms": at(0.999),
        "max_ms": sorted_seconds[-1] * 1000,
        "min_ms": sorted_seconds[0] * 1000,
    }


def histogram_quantiles(
    before: dict[str, float], after: dict[str, float], bucket: str, labels: str = ""
) -> dict[str, float | None]:
    """p50/p99 upper bounds from the difference of two Prometheus histogram readings
    (``labels``: the series' other labels as exposed, e.g. ``stage="build"``)."""
    bounds = []
    for name, value in after.items():
        if not (name.startswith(bucket + "{") and name.endswith("}")):
            continue
        parts = name[len(bucket) + 1 : -1].split(",")
        if labels and labels not in parts:
            continue
        le = next(p for p in parts if p.startswith("le=")).split('"')[1]
        bounds.append((math.inf if le == "+Inf" else float(le), value - before.get(name, 0)))
    bounds.sort()
    total = bounds[-1][1] if bounds else 0
    out: dict[str, float | None] = {"count": total}
    for label, q in (("p50_le_ms", 0.5), ("p99_le_ms", 0.99)):
        out[label] = next((b * 1000 for b, count in bounds if total and count >= q * total), None)
    return out


# A change's path, stage by stage, as the two parts' histograms name it: (part, stage,
# what it covers). The first and the last write are counted from the commit.
STAGES = (
    ("syncd", "commit_to_wakeup", "commit → syncd woken (NOTIFY or bus)"),
    ("syncd", "snapshot_read", "… syncd's snapshot read from Postgres"),
    ("syncd", "redis_write", "… syncd's write to the edge Redis"),
    ("syncd", "wakeup_to_written", "syncd woken → edge Redis written"),
    ("proxy", "redis_to_told", "edge Redis written → proxy told"),
    ("proxy", "build", "… building the new version"),
    ("proxy", "told_to_applied", "proxy told → state applied"),
    ("proxy", "fan_out", "first → last stream client's write"),
    ("proxy", "commit_to_first_write", "commit → first client write"),
    ("proxy", "commit_to_last_write", "commit → last client write"),
)
STAGE_BUCKETS = {
    "syncd": "crivline_syncd_stage_seconds_bucket",
    "proxy": "crivline_proxy_stage_seconds_bucket",
}


def stage_quantiles(
    before: dict[str, dict[str, float]], after: dict[str, dict[str, float]]
) -> list[dict[str, Any]]:
    """Each stage's count and p50/p99 bucket bounds between two readings of each part's
    ``/metrics`` (``{"syncd": {...}, "proxy": {...}}``)."""
    rows = []
    for part, stage, what in STAGES:
        q = histogram_quantiles(
            before.get(part, {}), after.get(part, {}), STAGE_BUCKETS[part], f'stage="{stage}"'
        )
        rows.append({"part": part, "stage": stage, "what": what, **q})
    return rows


def merge_samples(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The samples files of several stream-client processes as one: the sample lists
    concatenated, the counters added (a missing file counts as an empty one)."""
    out: dict[str, Any] = {"latency": [], "read_latency": [], "version": [], "stats": {}}
    for doc in docs:
        for name in ("latency", "read_latency", "version"):
            out[name].extend(doc.get(name, []))
        for name, value in doc.get("stats", {}).items():
            out["stats"][name] = out["stats"].get(name, 0) + value
    return out


def save_samples(path: Path, sorted_seconds: list[float]) -> None:
    path.write_text("".join(f"{s * 1000:.3f}\n" for s in sorted_seconds))


def load_samples(path: Path) -> list[float]:
    if not path.exists():
        return []
    return [float(line) for line in path.read_text().split()]


# -- formatting -------------------------------------------------------------------------------


def _stage_table(add: Any, prop: dict[str, Any], workers: dict[str, Any] | None) -> None:
    """Where a change's time goes, per streams phase: each stage's p50/p99 (bucket bounds
    of the parts' own histograms, read before and after the phase's writes)."""
    phases = [
        (f"{phase['streams']:,} streams", phase["stages"])
        for phase in prop.values()
        if "stages" in phase
    ]
    if workers and "stages" in workers:
        phases.append((f"{workers['streams']:,} streams, 2 workers", workers["stages"]))
    if not phases:
        return
    add("### Where the time goes")
    add("")
    head = " | ".join(f"{label}: p50 / p99 ≤ ms (n)" for label, _ in phases)
    add(f"| stage | part | {head} |")
    add("| --- | --- | " + " | ".join(["---:"] * len(phases)) + " |")
    for i, (part, _stage, what) in enumerate(STAGES):
        cells = []
        for _count, rows in phases:
            row = rows[i]
            cells.append(
                f"{_f(row.get('p50_le_ms'), 1)} / {_f(row.get('p99_le_ms'), 1)} "
                f"({_f(row.get('count'), 0)})"
            )
        add(f"| {what} | {part} | " + " | ".join(cells) + " |")
    add("")
    add(
        "From `crivline_syncd_stage_seconds` and `crivline_proxy_stage_seconds` (upper "
        "bounds of their buckets, so coarse: 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250 ms …). "
        "Stages marked … are parts of the stage below them. Commit times are Postgres's "
        "`clock_timestamp()` of the bump, compared with each part's wall clock (one machine "
        "here). With 2 workers the proxy's stages add up both workers' histograms "
        "(each worker's own `/metrics`, read through its `/status` on one connection)."
    )
    add("")


def _workers_streams(add: Any, phase: dict[str, Any]) -> None:
    """The streams phase on ``--workers 2``: totals, then each worker."""
    add(f"## Streams on --workers 2: {phase['streams']:,} streams")
    add("")
    add(
        "| stream clients | opened in | RSS per idle stream | writes | versions | "
        "patches received / expected (writes carrying them) | p50 ms | p90 ms | p99 ms | max ms | "
        "p99 ms, read by locust | workers CPU s | clients CPU s (cores) | "
        "cores while writing: workers / clients / machine | load average start → end |"
    )
    add("| " + " | ".join(["---:"] * 15) + " |")
    load = phase["load_average"]
    add(
        f"| {phase['clients']} | {phase['open_seconds']:.1f} s | "
        f"{phase['rss_per_stream'] / KIB:.1f} KiB | {phase['writes']:.0f} "
        f"({phase['write_rate']:g}/s) | {phase['versions']} | "
        f"{phase['samples']:,} / {phase['expected']:,} ({_f(phase['patch_writes'])}) | "
        f"{_f(phase['p50_ms'], 1)} | "
        f"{_f(phase['p90_ms'], 1)} | {_f(phase['p99_ms'], 1)} | {_f(phase['max_ms'], 1)} | "
        f"{_f(phase.get('read', {}).get('p99_ms'), 1)} | {_f(phase['proxy_cpu_seconds'], 1)} | "
        f"{_f(phase['client_cpu_seconds'], 1)} ({_f(phase['client_cores'], 2)}) | "
        f"{_f(phase.get('worker_cores_writing'), 2)} / {_f(phase.get('client_cores_writing'), 2)}"
        f" / {_f(phase.get('machine_cores'), 2)} | {load['start'][0]:.2f} → {load['end'][0]:.2f} |"
    )
    add("")
    add("| worker pid | streams held | RSS growth per stream | CPU s |")
    add("| ---: | ---: | ---: | ---: |")
    for pid, worker in phase["per_worker"].items():
        held = worker["streams_open"]
        per = (worker["rss_open"] - worker["rss_before"]) / held if held else None
        add(
            f"| {pid} | {held:,.0f} | {_f(per and per / KIB, 1, ' KiB')} | "
            f"{worker['cpu_seconds']:.1f} |"
        )
    add("")
    add(
        f"Both workers together (their shared `/metrics`): commit→proxy p99 ≤ "
        f"{_f(phase['proxy_side'].get('p99_le_ms'), 0)} ms."
    )
    add("")
    coalesced = phase.get("stream_stats", {}).get("coalesced_patches", 0)
    add(
        f"Patches that reached a client in one read with a later patch: {coalesced:,} of "
        f"{phase['samples']:,}. A read has one kernel time stamp (its last segment's), so "
        "theirs is an upper bound: a client that fell a change behind shows it as latency."
    )
    add("")
    add(
        "A fresh `crivline proxy --workers 2` (SO_REUSEPORT spreads the connections), "
        f"unpinned; the streams come from {phase['clients']} locust processes (their samples "
        f"merged; {_client_priority(phase)}, so on a saturated machine they "
        "wait for the workers rather than the other way round), since one process's "
        f"open-files limit ({phase.get('open_files_limit')}) and one gevent loop cannot hold "
        "them all. "
        "Expected: every version the clients saw, times the streams (a version that "
        "changes nothing sends no event). Writes carrying them: the workers' own counters; "
        "a worker that applies two versions at once sends both patches in one write. "
        "Memory: "
        "both workers' RSS growth while the streams opened, over the streams. Clients' "
        "CPU: the locust processes' whole lives (opening the streams included); while "
        "writing: from the first write until the workers stopped sending patches."
    )
    add("")


def _f(value: Any, digits: int = 0, suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:,.{digits}f}{suffix}"


def _verdict(ok: bool | None) -> str:
    return "—" if ok is None else ("**met**" if ok else "**missed**")


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target of the issue with what this run measured."""
    rows: list[dict[str, Any]] = []
    thr = results.get("throughput", {})
    for key, label in (
        ("flags-304", "GET /sdk/v1/flags 304 ≥ 75% of baseline"),
        ("flags-200", "GET /sdk/v1/flags 200 ≥ 75% of baseline"),
        ("ofrep-single", "OFREP single (targeted) ≥ 60% of JSON baseline"),
        ("bulk-etag", "OFREP bulk, ETag hits ≥ 60% of JSON baseline"),
    ):
        case = thr.get(key)
        if case and case.get("ratio") is not None:
            ratio = case["ratio"]
            rows.append(
                {
                    "target": label,
                    "measured": f"{ratio:.2f}× baseline "
                    f"({case['proxy_rps']:,.0f} vs {case['baseline_rps']:,.0f} req/s)",
                    "ok": ratio >= case["target_ratio"],
                }
            )
    case = thr.get("bulk-new-context")
    if case:
        rows.append(
            {
                "target": "OFREP bulk, 100 flags, new context ≥ 3,000 req/s",
                "measured": f"{case['proxy_rps']:,.0f} req/s",
                "ok": case["proxy_rps"] >= case["target_rps"],
            }
        )
    prop = results.get("propagation", {})
    for count, limit in (("1000", 50), ("10000", 250)):
        phase = prop.get(count)
        if phase and phase.get("p99_ms") is not None:
            rows.append(
                {
                    "target": f"propagation p99 ≤ {limit} ms with {int(count):,} streams",
                    "measured": f"p99 {phase['p99_ms']:.1f} ms "
                    f"(p50 {phase['p50_ms']:.1f}, {phase['samples']:,} patches)",
                    "ok": phase["p99_ms"] <= limit,
                }
            )
    biggest = next(iter(prop.values()), None)  # the phase measured on a fresh proxy
    if biggest:
        per = biggest["rss_per_stream"]
        rows.append(
            {
                "target": "≤ 16 KB resident per idle stream (10,000 open)",
                "measured": f"{per:,.0f} bytes ({per / KIB:.1f} KiB), {biggest['streams']:,} open",
                "ok": per <= 16_000 if biggest["streams"] >= 10_000 else None,
            }
        )
    spread = results.get("streams_workers")
    if spread and spread.get("p99_ms") is not None:
        per = spread["rss_per_stream"]
        rows.append(
            {
                "target": f"propagation p99 ≤ 500 ms with {spread['streams']:,} streams on "
                "--workers 2 (and ≤ 16 KB per idle stream)",
                "measured": f"p99 {spread['p99_ms']:.1f} ms (p50 {spread['p50_ms']:.1f}, "
                f"{spread['samples']:,} of {spread['expected']:,} patches); {per:,.0f} bytes "
                "per stream",
                "ok": spread["p99_ms"] <= 500
                and per <= 16_000
                and spread["samples"] >= spread["expected"]
                if spread["streams"] >= 20_000
                else None,
            }
        )
    workers = results.get("workers")
    if workers and workers.get("speedup") is not None:
        rows.append(
            {
                "target": "--workers 2 ≥ 1.4× one worker (polling)",
                "measured": f"{workers['speedup']:.2f}× ({workers['two_rps']:,.0f} vs "
                f"{workers['one_rps']:,.0f} req/s; generator "
                f"{workers['generator_cores']:.2f} CPU)",
                "ok": workers["speedup"] >= workers["target"],
            }
        )
    metering = results.get("metering")
    for name in ("flags-200", "flags-304"):
        case = (metering or {}).get(name)
        if case and case.get("ratio") is not None:
            rows.append(
                {
                    "target": f"metering + quota checks cost ≤ 3% of polling ({name})",
                    "measured": f"on = {case['ratio']:.3f}× off ({case['on_rps']:,.0f} vs "
                    f"{case['off_rps']:,.0f} req/s)",
                    "ok": case["ratio"] >= (metering or {})["target"],
                }
            )
    return rows


def write(results: dict[str, Any], out: Path) -> Path:
    plots = _plots(results, out)
    lines: list[str] = []
    add = lines.append
    machine = results.get("machine", {})
    plan = results.get("plan", {})
    add(f"# Crivline Edge bench — {results.get('finished_at', '')} ({plan.get('mode', '?')})")
    add("")
    if plan.get("mode") == "smoke":
        add("_Smoke run: seconds per phase. It proves the harness works; its figures mean little._")
        add("")
    if results.get("error"):
        add(f"**The run failed:** `{results['error']}` — what follows is partial.")
        add("")
    add(
        f"- machine: {machine.get('cpu', '?')}, {machine.get('cpus', '?')} CPUs "
        f"({machine.get('usable_cpus', '?')} usable), {machine.get('memory_gib', '?')} GiB, "
        f"Linux {machine.get('kernel', '?')}, Python {machine.get('python', '?')}"
    )
    packages = ", ".join(f"{k} {v}" for k, v in machine.get("packages", {}).items())
    add(f"- packages: {packages}")
    add(f"- load average at start: {machine.get('load_average_at_start')}")
    pinning = results.get("pinning")
    where = (
        f"server under test on CPU {pinning['server']}, load generator on CPU "
        f"{pinning['generator']} (not in the workers phase)"
        if pinning
        else "none (fewer than 2 CPUs)"
    )
    add(f"- throughput generator: {results.get('generator', '?')}; pinning: {where}")
    flag_set = results.get("flag_set", {})
    add(f"- flag set: {flag_set.get('flags', '?')} flags, {flag_set.get('bytes', 0):,} bytes")
    add(f"- run time: {results.get('seconds', 0):.0f} s")
    add("")
    rows = targets(results)
    if rows:
        add("## Targets")
        add("")
        add("| target | measured | |")
        add("| --- | --- | --- |")
        for row in rows:
            add(f"| {row['target']} | {row['measured']} | {_verdict(row['ok'])} |")
        add("")
    thr = results.get("throughput", {})
    if thr:
        add("## Throughput (medians of alternating rounds)")
        add("")
        add(
            "| case | proxy req/s | baseline req/s | ratio | proxy CPU µs/req | "
            "baseline CPU µs/req | CPU ratio | generator CPU | irq CPU | other CPU | "
            "proxy p99 ms | errors |"
        )
        add("| --- |" + " ---: |" * 11)
        for name, case in thr.items():
            p99 = sorted(r["p99_ms"] for r in case["runs"]["proxy"])[
                len(case["runs"]["proxy"]) // 2
            ]
            check = "" if case["path_ok"] in (None, True) else " (unexpected answer size!)"
            add(
                f"| {name}{check} | {_f(case['proxy_rps'])} | {_f(case['baseline_rps'])} | "
                f"{_f(case['ratio'], 2)} | {_f(case['proxy_us_per_request'], 1)} | "
                f"{_f(case['baseline_us_per_request'], 1)} | {_f(case['cpu_ratio'], 2)} | "
                f"{_f(case['generator_cores'], 2)} | {_f(case.get('irq_cores'), 2)} | "
                f"{_f(case.get('other_cores'), 2)} | "
                f"{_f(p99, 1)} | {case['errors']} |"
            )
        add("")
        add(
            "Ratio = proxy/baseline requests per second; CPU ratio = baseline/proxy server "
            "CPU per request (1.0 = as cheap as the baseline). CPU columns are in cores: "
            "the generator's; interrupts (loopback networking); other — everything else the "
            "machine ran meanwhile (other processes: a busy neighbour makes every figure less "
            "reliable)."
        )
        add("")
    workers = results.get("workers")
    if workers:
        add("## Workers")
        add("")
        add(
            f"Polling 304 path: one worker {_f(workers['one_rps'])} req/s, two workers "
            f"{_f(workers['two_rps'])} req/s = **{_f(workers['speedup'], 2)}×**; the proxy "
            f"processes used {_f(workers['server_cores'], 2)} CPU and the generator "
            f"{_f(workers['generator_cores'], 2)} CPU of the machine's "
            f"{machine.get('usable_cpus', '?')}; other processes took "
            f"{_f(workers.get('other_cores'), 2)} CPU meanwhile."
        )
        add("")
    metering = results.get("metering")
    if metering:
        add("## Metering")
        add("")
        add("| polling | metering on | metering off | on/off | server µs/request on | off |")
        add("| --- | --- | --- | --- | --- | --- |")
        for name in ("flags-200", "flags-304"):
            if name in metering:
                c = metering[name]
                add(
                    f"| {name} | {_f(c['on_rps'])} req/s | {_f(c['off_rps'])} req/s | "
                    f"**{_f(c['ratio'], 3)}×** | {_f(c['on_us_per_request'], 1)} | "
                    f"{_f(c['off_us_per_request'], 1)} |"
                )
        add("")
        add(
            "Two fresh proxies of the same edge, one as shipped, one with "
            "`CRIVLINE_METERING=off` (nothing counted, no quota or stream-cap check), "
            "alternating round by round on the same pinned CPU."
        )
        add("")
    prop = results.get("propagation", {})
    if prop:
        add("## Streams: propagation and memory")
        add("")
        add(
            "| open streams | opened in | RSS per idle stream | writes | patches received | "
            "p50 ms | p90 ms | p99 ms | max ms | p99 ms, read by locust | "
            "commit→proxy p99 ≤ ms | proxy CPU s | machine CPU |"
        )
        add("| " + " | ".join(["---:"] * 13) + " |")
        for number, phase in enumerate(prop.values()):
            writes = phase["writes"]
            # Only the first phase opens streams on a proxy that has not held any: later
            # ones reuse the memory the previous phase's streams freed.
            memory = f"{phase['rss_per_stream'] / KIB:.1f} KiB" if number == 0 else "—"
            add(
                f"| {phase['streams']:,} | {phase['open_seconds']:.1f} s | "
                f"{memory} | {writes:.0f} "
                f"({phase['write_rate']:g}/s) | {phase['samples']:,} | {_f(phase['p50_ms'], 1)} | "
                f"{_f(phase['p90_ms'], 1)} | {_f(phase['p99_ms'], 1)} | {_f(phase['max_ms'], 1)} | "
                f"{_f(phase.get('read', {}).get('p99_ms'), 1)} | "
                f"{_f(phase['proxy_side'].get('p99_le_ms'), 0)} | "
                f"{_f(phase['proxy_cpu_seconds'], 1)} | {_f(phase.get('machine_cores'), 2)} |"
            )
        add("")
    spread = results.get("streams_workers")
    if spread:
        _workers_streams(add, spread)
    if prop or spread:
        _stage_table(add, prop, spread)
    if prop:
        add(
            "Propagation = the moment the patch's bytes reached the client's socket (kernel "
            "time stamp, SO_TIMESTAMPNS) minus its "
            "`committedAt` (the commit in PostgreSQL): control → Postgres NOTIFY → syncd → "
            "Valkey → pub/sub → proxy → every stream. commit→proxy is the proxy's own "
            'histogram (bucket bound) of when it applied the change. "Read by locust" is '
            "when the load generator got round to the bytes: the difference is locust's own "
            "backlog (one process reading every stream), not the proxy's. Machine CPU: the "
            "cores the whole machine kept busy while the writers ran."
        )
        add("")
    scenarios = results.get("scenarios", {})
    if scenarios:
        add("## Locust scenarios")
        add("")
        add(
            "| scenario | request | requests | failures | req/s | p50 ms | p95 ms | p99 ms | "
            "max ms |"
        )
        add("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for key, scenario in scenarios.items():
            for row in scenario["rows"]:
                add(
                    f"| {key} | {row['type']} {row['name']} | {row['requests']:,} | "
                    f"{row['failures']} | {_f(row['rps'], 1)} | {_f(row['p50'])} | "
                    f"{_f(row['p95'])} | {_f(row['p99'])} | {_f(row['max'])} |"
                )
        add("")
        add("| scenario | users | run s | locust CPU s | locust CPU, cores | exit code |")
        add("| --- | ---: | ---: | ---: | ---: | ---: |")
        for key, scenario in scenarios.items():
            seconds, cpu = scenario["seconds"], scenario["locust_cpu_seconds"]
            add(
                f"| {key} | {scenario['users']:,} | {seconds:.0f} | {cpu:.1f} | "
                f"{cpu / max(seconds, 1):.2f} | {scenario['exit_code']} |"
            )
        add("")
        add(
            "Run time is the locust process's whole life, start-up included (about 1 CPU "
            "second to import locust and gevent)."
        )
        add("")
    add("## Plots")
    add("")
    if plots:
        for title, name in plots:
            add(f"![{title}]({name})")
            add("")
    else:
        add("Not drawn: matplotlib is not installed (`make bench-deps`).")
        add("")
    add(
        "Raw data: `results.json`, locust's final statistics (`<scenario>.json`) and CSVs, "
        "sorted propagation samples (`streams-*-latency.txt`, ms), logs in `logs/`."
    )
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _plots(results: dict[str, Any], out: Path) -> list[tuple[str, str]]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    made: list[tuple[str, str]] = []

    samples = {
        key: load_samples(out / f"streams-{key}-latency.txt")
        for key in results.get("propagation", {})
    }
    samples = {k: v for k, v in samples.items() if v}
    if samples:
        fig, ax = plt.subplots(figsize=(9, 4.5))
        top = max(max(v) for v in samples.values())
        bins = [x * max(top, 1) / 60 for x in range(61)]
        for key, values in sorted(samples.items(), key=lambda kv: int(kv[0])):
            p99 = values[min(len(values) - 1, math.ceil(0.99 * len(values)) - 1)]
            ax.hist(
                values,
                bins=bins,
                alpha=0.55,
                label=f"{int(key):,} streams (p99 {p99:.0f} ms, n={len(values):,})",
            )
        ax.set_xlabel("commit → SSE client, ms")
        ax.set_ylabel("patches received")
        ax.set_yscale("log")
        ax.set_title("Propagation latency")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "propagation.png", dpi=110)
        plt.close(fig)
        made.append(("propagation latency histogram", "propagation.png"))

    series = []
    for key in results.get("scenarios", {}):
        counts = per_second(out / f"{key}.json")
        if len(counts) >= 2 and not key.endswith("writers"):
            t0 = counts[0][0]
            series.append((key, [t - t0 for t, _ in counts], [n for _, n in counts]))
    if series:
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
        for key, xs, ys in series:
            (bottom if key.startswith("streams") else top).plot(xs, ys, label=key)
        top.set_ylabel("requests/s")
        top.set_title("Throughput over time (locust scenarios)")
        bottom.set_ylabel("SSE events/s (connects, patches)")
        bottom.set_xlabel("seconds into the scenario")
        for ax in (top, bottom):
            if ax.lines:
                ax.legend()
        fig.tight_layout()
        fig.savefig(out / "throughput.png", dpi=110)
        plt.close(fig)
        made.append(("throughput over time", "throughput.png"))

    thr = results.get("throughput", {})
    if thr:
        fig, ax = plt.subplots(figsize=(9, 4.5))
        names = list(thr)
        xs = list(range(len(names)))
        proxy = [thr[n]["proxy_rps"] for n in names]
        base = [thr[n]["baseline_rps"] for n in names]
        ax.bar([x - 0.2 for x in xs], base, width=0.4, label="baseline", color="#9aa")
        ax.bar([x + 0.2 for x in xs], proxy, width=0.4, label="proxy", color="#2a7")
        for x, n in zip(xs, names, strict=True):
            ratio = thr[n]["ratio"]
            if ratio is not None:
                ax.annotate(
                    f"{ratio:.2f}×",
                    (x + 0.2, thr[n]["proxy_rps"]),
                    ha="center",
                    va="bottom",
                    fontsize=9,
                )
        ax.set_xticks(list(xs), names)
        ax.set_ylabel("requests/s")
        ax.set_title(f"Proxy vs baseline ({results.get('generator', '')})")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "ratios.png", dpi=110)
        plt.close(fig)
        made.append(("proxy vs baseline throughput", "ratios.png"))
    return made


def _client_priority(phase: dict[str, Any]) -> str:
    if phase.get("client_scheduling") == "idle":
        return "under SCHED_IDLE"
    return f"at niceness +{phase.get('client_nice', 0)}"
