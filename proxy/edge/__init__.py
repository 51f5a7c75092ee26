"""The state this process holds about its edge, fed from the edge's Redis.

- :mod:`proxy.edge.environments` — the per-environment cache, built once per version.
- :mod:`proxy.edge.subscriber` — the one pub/sub subscriber; reconnect and resync.
- :mod:`proxy.edge.keys` — the in-memory index of API keys.
- :mod:`proxy.edge.status` — what this process knows about its edge (pure state).
- :mod:`proxy.edge.monitor` — the poll of syncd's heartbeat and sync state that feeds it.
- :mod:`proxy.edge.statedir` — the environments this process applied, kept on local disk
  (``CRIVLINE_STATE_DIR``).
- :mod:`proxy.edge.saved` — serving the state folder and ``--bootstrap`` files at start-up.
- :mod:`proxy.edge.presence` — what this process serves, published for ``crivline status``.
"""
