"""Where the load goes: the proxy and control URLs, the keys, the project and environment.

A :class:`Target` comes from, in order of precedence: explicit values (command-line
flags or ``CRIVLINE_LT_*`` variables), a target file (``--target``, written by the
bench runner: JSON with the fields of :class:`Target`), or the ``stack.json`` that
``crivline up`` writes (``--stack``, default ``.crivline/stack.json``: the demo tenant's
development environment). Pure stdlib: both the locust scenarios and the bench runner
use it, and it never imports locust.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

DEFAULT_STACK = Path(".crivline/stack.json")
LISTS = ("server_keys", "client_keys", "write_flags")


@dataclass(frozen=True)
class Target:
    proxy: str = ""  # http://host:port of a proxy
    control: str = ""  # http://host:port of the control API (writers only)
    token: str = ""  # management token (writers only)
    project: str = ""
    environment: str = ""
    server_keys: list[str] = field(default_factory=list)
    client_keys: list[str] = field(default_factory=list)
    # Optional: the flags writers change and the flag single evaluations ask for.
    write_flags: list[str] = field(default_factory=list)
    eval_flag: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    def missing(self, *names: str) -> list[str]:
        return [n for n in names if not getattr(self, n)]


def from_stack(path: Path) -> Target:
    """The demo tenant's development environment of a ``crivline up`` stack."""
    doc = json.loads(path.read_text())
    parts = doc.get("parts", {})
    demo = doc.get("demo", {})
    keys = demo.get("keys", {}).get("development", {})
    return Target(
        proxy=parts.get("proxy", {}).get("url", ""),
        control=parts.get("control", {}).get("url", ""),
        token=demo.get("token", ""),
        project=demo.get("project", ""),
        environment="development",
        server_keys=[keys["server"]] if keys.get("server") else [],
        client_keys=[keys["client"]] if keys.get("client") else [],
    )


def from_file(path: Path) -> Target:
    doc = json.loads(path.read_text())
    known = {f.name for f in fields(Target)}
    return Target(**{k: v for k, v in doc.items() if k in known})


def _split(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    return [part.strip() for item in items for part in item.split(",") if part.strip()]


def load(
    *,
    target: str | None = None,
    stack: str | None = None,
    overrides: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> Target:
    """Resolve the target. ``overrides`` holds command-line values (None: not given)."""
    env = os.environ if environ is None else environ
    target = target or env.get("CRIVLINE_LT_TARGET")
    stack = stack or env.get("CRIVLINE_LT_STACK")
    if target:
        base = from_file(Path(target))
    elif stack or DEFAULT_STACK.exists():
        base = from_stack(Path(stack) if stack else DEFAULT_STACK)
    else:
        base = Target()
    values: dict[str, Any] = {}
    for f in fields(Target):
        given = (overrides or {}).get(f.name)
        if given is None:
            given = env.get(f"CRIVLINE_LT_{f.name.upper()}")
        if given is None or given == "" or given == []:
            continue
        values[f.name] = _split(given) if f.name in LISTS else str(given)
    return replace(base, **values)
