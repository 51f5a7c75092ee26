"""What every scenario shares: command-line options, the target, the flags, the samples.

Imported only by the locustfiles (it imports locust, which patches the standard library
with gevent). On ``init`` it resolves the :class:`ltconfig.Target`, points each user
class at the proxy or at the control API, and learns the flag set (from the target
file, else from the proxy) so single evaluations ask for a targeted flag and writers
change flags whose variants they know. Stream users append their propagation samples
here; they are written to ``--samples-file`` when locust quits.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
import urllib.request
from array import array
from typing import Any

import ltconfig
from locust import events
from locust.env import Environment

log = logging.getLogger("loadtests")

TARGET = ltconfig.Target()
FLAGS: dict[str, dict[str, Any]] = {}  # key -> flagd definition, from the proxy
OPTIONS: Any = None

# Propagation samples of this process, one per patch: when its bytes arrived (kernel
# time stamp), its latency to arrival and to the moment this process read it, its version.
RECEIVED = array("d")
LATENCY = array("d")
READ_LATENCY = array("d")
VERSION = array("q")
# coalesced_patches: patches that reached a client in the same read as a later one. A
# read carries one kernel time stamp (its last segment's), so theirs is an upper bound:
# a client that fell behind by a change's interval shows it as latency.
STREAM_STATS = {
    "patches": 0,
    "puts_after_open": 0,
    "without_commit_time": 0,
    "connects": 0,
    "coalesced_patches": 0,
}

_counter = itertools.count()


def next_index() -> int:
    """A process-wide sequence number (users use it to spread over keys and flags)."""
    return next(_counter)


def pick(items: list[str], index: int) -> str:
    if not items:
        raise RuntimeError("the target has none of these (see loadtests/ltconfig.py)")
    return items[index % len(items)]


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    group = parser.add_argument_group("crivline target")
    group.add_argument("--target", default="", help="target JSON (the bench runner writes one)")
    group.add_argument("--stack", default="", help="stack.json of `crivline up`")
    group.add_argument("--proxy-url", default="", help="a proxy, http://host:port")
    group.add_argument("--control-url", default="", help="the control API, http://host:port")
    group.add_argument("--token", default="", help="management token (writers)")
    group.add_argument("--project", default="", help="project key (writers)")
    group.add_argument("--environment", default="", help="environment key (writers)")
    group.add_argument("--server-key", default="", help="server key(s), comma-separated")
    group.add_argument("--client-key", default="", help="client key(s), comma-separated")
    group = parser.add_argument_group("crivline scenario")
    group.add_argument("--poll-interval", type=float, default=1.0, help="seconds between polls")
    group.add_argument("--eval-interval", type=float, default=0.2, help="per server SDK")
    group.add_argument("--bulk-interval", type=float, default=1.0, help="per frontend SDK")
    group.add_argument("--session-requests", type=int, default=10, help="bulk calls per context")
    group.add_argument("--write-rate", type=float, default=1.0, help="writes/s per writer")
    group.add_argument("--samples-file", default="", help="where streams write latencies")


@events.init.add_listener
def _init(environment: Environment, **_kwargs: Any) -> None:
    global TARGET, OPTIONS
    opts = environment.parsed_options
    if opts is None:
        return
    OPTIONS = opts
    TARGET = ltconfig.load(
        target=opts.target or None,
        stack=opts.stack or None,
        overrides={
            "proxy": opts.proxy_url or None,
            "control": opts.control_url or None,
            "token": opts.token or None,
            "project": opts.project or None,
            "environment": opts.environment or None,
            "server_keys": opts.server_key or None,
            "client_keys": opts.client_key or None,
        },
    )
    for user_class in environment.user_classes:
        wants = getattr(user_class, "crivline_host", "proxy")
        user_class.host = TARGET.control if wants == "control" else TARGET.proxy
        setup = getattr(user_class, "configure", None)
        if setup is not None:
            setup(opts)
    missing = TARGET.missing("proxy")
    if missing:
        raise SystemExit(f"loadtests: no {', '.join(missing)}: give --target, --stack or flags")


@events.test_start.add_listener
def _learn_flags(environment: Environment, **_kwargs: Any) -> None:
    """The flag set, read once from the proxy (needs a server key)."""
    if FLAGS or not TARGET.server_keys:
        return
    request = urllib.request.Request(
        TARGET.proxy + "/sdk/v1/flags",
        headers={"Authorization": f"Bearer {TARGET.server_keys[0]}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            doc = json.loads(response.read())
    except OSError as exc:
        log.warning("could not read the flag set from the proxy: %s", exc)
        return
    FLAGS.update(doc.get("flags", {}))


def eval_flag() -> str:
    if TARGET.eval_flag:
        return TARGET.eval_flag
    targeted = sorted(k for k, f in FLAGS.items() if f.get("targeting"))
    return targeted[0] if targeted else next(iter(sorted(FLAGS)), "missing-flag")


def write_flags() -> list[str]:
    """Flags the writers may change: the target's, else every boolean flag."""
    if TARGET.write_flags:
        return list(TARGET.write_flags)
    booleans = [
        k
        for k, f in sorted(FLAGS.items())
        if f.get("variants") and all(isinstance(v, bool) for v in f["variants"].values())
    ]
    return booleans or sorted(FLAGS)


def record_propagation(arrived: float, read: float, committed_at: float, version: int) -> float:
    latency = arrived - committed_at
    RECEIVED.append(arrived)
    LATENCY.append(latency)
    READ_LATENCY.append(read - committed_at)
    VERSION.append(version)
    return latency


@events.quitting.add_listener
def _write_samples(environment: Environment, **_kwargs: Any) -> None:
    path = getattr(OPTIONS, "samples_file", "") if OPTIONS is not None else ""
    if not path:
        return
    doc = {
        "written_at": time.time(),
        "received": RECEIVED.tolist(),
        "latency": LATENCY.tolist(),
        "read_latency": READ_LATENCY.tolist(),
        "version": VERSION.tolist(),
        "stats": STREAM_STATS,
    }
    with open(path, "w") as out:
        json.dump(doc, out)
