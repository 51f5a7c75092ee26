"""The proxy tests' fixtures live in :mod:`edgekit` (importable by the test modules)."""

from edgekit import feeder, open_stream, start_proxy

__all__ = ["feeder", "open_stream", "start_proxy"]
