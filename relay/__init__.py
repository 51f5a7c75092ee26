"""relay: LISTENs on the central primary and republishes every version bump on the bus.

Bus-only edges (syncd with ``CRIVLINE_SYNCD_BUS_ONLY=on``) take their wake-ups from the
bus alone. Control publishes there after each commit, but a control that dies between
commit and publish would leave a change without a wake-up until the edges' next
reconciliation. The relay closes that gap: one or a few per deployment, each holding the
only edge-facing connection to the primary.

- ``relay``  :class:`relay.Relay`: LISTEN, coalesce, publish each version once (guarded)
- ``main``   ``crivline relay``: settings → clients → relay, uvloop, signals
"""
