"""The relay's Prometheus metrics, in a registry of its own (one per relay)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class RelayMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.messages = Counter(
            "crivline_relay_messages_total",
            "Versions handled, by fate: published on the bus, duplicate (the bus had carried"
            " it or a newer one), invalid (a notification that is not ours).",
            ["fate"],
            registry=r,
        )
        self.sweeps = Counter(
            "crivline_relay_sweeps_total",
            "Passes over every environment's version on the primary (at connect, then"
            " every interval).",
            registry=r,
        )
        self.reconnects = Counter(
            "crivline_relay_reconnects_total",
            "Times the LISTEN connection or the bus was lost and the relay reconnected.",
            registry=r,
        )
        self.listening = Gauge(
            "crivline_relay_listening",
            "1 while the relay LISTENs on the primary and its last sweep succeeded.",
            registry=r,
        )
