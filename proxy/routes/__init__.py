"""The proxy's HTTP endpoints, one module per surface.

- :mod:`proxy.routes.sdk` — the SDK stream and polling endpoints.
- :mod:`proxy.routes.ofrep` — OpenFeature OFREP evaluation (single, bulk, streams).
- :mod:`proxy.routes.health` — ``/healthz``, ``/readyz``, ``/metrics``.
- :mod:`proxy.routes.status` — the operator status page; beside it its documents
  (:mod:`proxy.routes.status_assets`), the sampler behind its rates and chart
  (:mod:`proxy.routes.status_sampler`) and its browser session
  (:mod:`proxy.routes.status_session`).
"""
