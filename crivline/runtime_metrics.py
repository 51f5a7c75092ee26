"""The standard process and interpreter metrics, on a part's own registry.

Every part keeps its metrics on a registry of its own (not prometheus_client's global
one, which tests and several apps in one process would share), so the library's
``process_*`` (CPU, resident memory, open descriptors, start time), ``python_info`` and
``python_gc_*`` collectors are added to it explicitly. They are returned too, for a part
that also publishes them elsewhere (the proxy's workers, :mod:`proxy.sharedmetrics`).
"""

from __future__ import annotations

from typing import NamedTuple

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector


class RuntimeCollectors(NamedTuple):
    process: ProcessCollector
    platform: PlatformCollector
    gc: GCCollector


def add_runtime_collectors(registry: CollectorRegistry) -> RuntimeCollectors:
    return RuntimeCollectors(
        ProcessCollector(registry=registry),
        PlatformCollector(registry=registry),
        GCCollector(registry=registry),
    )
