"""The provider tests run against the real pipeline of ``tests/proxy/edgekit.py``
(imported, not copied): control API → Postgres → syncd → Valkey → proxy."""

from __future__ import annotations

import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent
for folder in (TESTS / "proxy", TESTS.parent / "loadtests"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from edgekit import central, feeder, open_stream, start_proxy  # noqa: E402
from providerkit import providers  # noqa: E402

__all__ = ["central", "feeder", "open_stream", "providers", "start_proxy"]
