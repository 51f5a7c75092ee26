"""The proxy tests' fixtures live in :mod:`edgekit` (importable by the test modules)."""

from edgekit import central, feeder, open_stream, start_proxy

__all__ = ["central", "feeder", "open_stream", "start_proxy"]
