"""The adversarial suite's world: the real pipeline (control API → Postgres → syncd →
Valkey → proxy) with two tenants that use the same names for different things.

The servers come from ``tests/support/edgekit.py`` and ``tests/support/control_testkit.py``
(imported, not copied): ``central`` runs the control API and a syncd daemon on the
per-test Postgres and Valkey, ``start_proxy`` a proxy on that Valkey.

:func:`build_world` gives both tenants project ``shop`` with environments ``dev`` and
``prod``, flag ``checkout``, a ``pro`` segment, and a server and a client key per
environment; their contents carry markers (``acme-dev-marker`` … ``globex-prod-marker``)
so a test can grep any answer for something it must not contain.
"""

from __future__ import annotations

import pytest
from support.edgekit import Central, StartProxy
from world import OPERATOR_TOKEN, OPTIONS, World, build_world


@pytest.fixture
async def world(central: Central, start_proxy: StartProxy) -> World:
    """Both tenants built through the control API, and a proxy holding all of it (with
    the status page on, so its routes are fuzzed too)."""
    return await build_world(central, start_proxy, options=OPTIONS, operator_token=OPERATOR_TOKEN)
