"""The load tests' 100-flag bench set (``loadtests/ltflags.py``), loaded by its path.

``loadtests/`` is locust's folder, not a package the suite imports (importing locust
patches the standard library); ``ltflags`` itself imports nothing but typing, so it is
safe to load here, once, and share.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

LOADTESTS = Path(__file__).resolve().parents[2] / "loadtests"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ltflags", LOADTESTS / "ltflags.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ltflags = _load()
