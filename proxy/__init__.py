"""Crivline Edge proxy: SSE streams, polling and OFREP evaluation from the edge's Redis.

Module map (one concern each):

- :mod:`proxy.main` — ``run(settings)``: uvloop, one process or ``--workers N``
  (:mod:`proxy.supervisor`, :mod:`proxy.worker`), graceful SIGTERM.
- :mod:`proxy.app` — ``create_app(settings)``: one cleanup context per resource.
- :mod:`proxy.edge` — the state Redis feeds, no HTTP: :mod:`proxy.edge.environments`
  (the per-environment cache, built once per version), :mod:`proxy.edge.subscriber`
  (the one pub/sub subscriber; reconnect and resync), :mod:`proxy.edge.keys` (the
  in-memory key index), :mod:`proxy.edge.status` (what this process knows about its
  edge), :mod:`proxy.edge.monitor` (the poll of syncd's heartbeat that feeds it),
  :mod:`proxy.edge.statedir` and :mod:`proxy.edge.saved` (the state folder, serving
  saved files at start-up) and :mod:`proxy.edge.presence` (what it serves, for
  ``crivline status``).
- :mod:`proxy.routes` — the endpoints: :mod:`proxy.routes.sdk`, :mod:`proxy.routes.ofrep`,
  :mod:`proxy.routes.health` (``/healthz``, ``/readyz``, ``/metrics``) and the operator
  status page, :mod:`proxy.routes.status`, with its documents, sampler and session
  beside it (``status_assets``, ``status_sampler``, ``status_session``).
- :mod:`proxy.fastlane`, :mod:`proxy.prerendered` — the hot routes (polling, OFREP
  single) answered before aiohttp's router, through the same middleware and handlers;
  their keep-alive answers written as pre-rendered bytes.
- :mod:`proxy.auth`, :mod:`proxy.access` — authentication, and the gate in front of every
  evaluation (key, rate limit, environment, quota, metering, a client ahead of us).
- :mod:`proxy.quota`, :mod:`proxy.metering`, :mod:`proxy.edgestreams`,
  :mod:`proxy.fairness` — the plan's daily quota decided from memory; usage counted in
  memory and flushed to Redis; stream counts across the edge's processes (per plan and
  per key); per-tenant caps and evaluation share in this process.
- :mod:`proxy.hub`, :mod:`proxy.streams` — fan-out to stream clients (each event's bytes
  written straight to every client's socket); serving one stream.
- :mod:`proxy.heap` — the garbage-collector policy (freeze long-lived objects).
- :mod:`proxy.context`, :mod:`proxy.bulkcache`, :mod:`proxy.tickets` — request bodies
  and their limits; the bulk-answer LRU; signed stream tickets.
- :mod:`proxy.ratelimit`, :mod:`proxy.cors`, :mod:`proxy.headers`, :mod:`proxy.errors`,
  :mod:`proxy.middleware`, :mod:`proxy.forwarded` — the cross-cutting parts (errors
  rendered in ONE place; forwarded headers trusted only when configured).
- :mod:`proxy.openapi` — the OpenAPI document of the proxy's own routes.
- :mod:`proxy.metrics` — Prometheus (every family declared there); :mod:`proxy.tally`
  (the hot-path counters, plain dicts) and :mod:`proxy.sharedmetrics` (``--workers``:
  one ``/metrics`` for all workers, prometheus_client's multiprocess mode).
- :mod:`proxy.options`, :mod:`proxy.appkeys` — tunables, typed app keys. Background
  tasks are always awaited (:mod:`crivline.tasks`, shared with control and syncd).

SSE framing is in :mod:`crivline.sse` (shared with the load tests).
"""
