"""The provider tests run against the real pipeline of ``tests/support/edgekit.py``
(imported, not copied): control API → Postgres → syncd → Valkey → proxy. Its fixtures
(``central``, ``feeder``, ``open_stream``, ``start_proxy``) are registered for the whole
suite in ``tests/conftest.py``."""

from __future__ import annotations

from providerkit import providers

__all__ = ["providers"]
