"""The proxy's HTTP endpoints, one module per surface.

- :mod:`proxy.routes.sdk` — the SDK stream and polling endpoints.
- :mod:`proxy.routes.ofrep` — OpenFeature OFREP evaluation (single, bulk, streams).
- :mod:`proxy.routes.health` — ``/healthz``, ``/readyz``, ``/metrics``.
- :mod:`proxy.routes.status` — the operator status page, with its documents in
  :mod:`proxy.routes.status_assets`.
"""
