"""control: the minimal write API over the central Postgres, and its only writer.

Every write is one transaction holding the change, an audit row with before/after
snapshots, and a bump of each affected environment's version (``pg_notify`` fires on
commit). After the commit the same notification is published on the optional Redis bus.
"""
