"""syncd: keeps an edge's Redis an exact, current replica of the central Postgres.

Module map (one concern each):

- ``main``       ``crivline syncd``: settings → clients → :class:`daemon.Daemon`, uvloop, signals
- ``clients``    Postgres pools, the dedicated LISTEN connection, Redis clients (bounded retries)
- ``config``     :class:`config.SyncdConfig`, derived from the shared settings
- ``daemon``     lifecycle: tasks, shutdown that finishes writes in flight, health/readiness
- ``follow``     wake-ups: Postgres LISTEN/NOTIFY and the Redis bus
- ``work``       the per-environment merged queue and its workers
- ``replicate``  one environment: snapshot, diff against Redis, version-guarded apply
- ``reconcile``  version comparison, full sync, removals, healing a Redis that lost data
- ``source``     snapshot reads (replica first when it is current) and scope versions
- ``scope``      tenant/project/environment filters and the wake-up pre-filter
- ``http``       ``/healthz``, ``/readyz``, ``/metrics``
- ``admin``      ``POST /admin/resync`` behind the operator token, problem+json refusals
- ``resync``     an operator's rebuild of one environment or all, answered when done
- ``plans``      tenants' plans into the edge Redis before their environments
- ``usage``      the edge's usage counts to control's ingestion route, exactly once
- ``metrics``    Prometheus metrics in a registry per daemon
- ``backoff``    jittered backoff, bounded retries, I/O error classes

The Redis writes themselves live in :mod:`crivline.edge_store` (shared with the proxy).
"""
