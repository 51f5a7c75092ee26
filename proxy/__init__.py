"""Crivline Edge proxy: SSE streams, polling and OFREP evaluation from the edge's Redis.

Module map (one concern each):

- :mod:`proxy.main` — ``run(settings)``: uvloop, one process or ``--workers N``
  (:mod:`proxy.supervisor`, :mod:`proxy.worker`), graceful SIGTERM.
- :mod:`proxy.app` — ``create_app(settings)``: one cleanup context per resource.
- :mod:`proxy.environments` — the per-environment cache, built once per version.
- :mod:`proxy.subscriber` — the one pub/sub subscriber; reconnect and resync.
- :mod:`proxy.keys`, :mod:`proxy.auth`, :mod:`proxy.access` — the in-memory key index,
  authentication, and the gate (auth + rate limit) in front of every data endpoint.
- :mod:`proxy.hub`, :mod:`proxy.streams` — fan-out to stream clients; serving one stream.
- :mod:`proxy.routes_sdk`, :mod:`proxy.routes_ofrep` — the endpoints.
- :mod:`proxy.context`, :mod:`proxy.bulkcache`, :mod:`proxy.tickets` — request bodies
  and their limits; the bulk-answer LRU; signed stream tickets.
- :mod:`proxy.ratelimit`, :mod:`proxy.cors`, :mod:`proxy.headers`, :mod:`proxy.errors`,
  :mod:`proxy.middleware` — the cross-cutting parts (errors rendered in ONE place).
- :mod:`proxy.health`, :mod:`proxy.metrics`, :mod:`proxy.status` — readiness and what
  feeds it, Prometheus, the operator status page.
- :mod:`proxy.options`, :mod:`proxy.appkeys`, :mod:`proxy.tasks` — tunables, typed app
  keys, background tasks that are always awaited.

SSE framing is in :mod:`crivline.sse` (shared with the load tests).
"""
