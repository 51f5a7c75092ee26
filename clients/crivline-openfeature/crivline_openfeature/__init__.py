"""Crivline Edge's in-process OpenFeature provider.

::

    from openfeature import api
    from crivline_openfeature import CrivlineProvider

    api.set_provider_and_wait(CrivlineProvider("https://edge.example", "crv_srv_…"))
    api.get_client().get_boolean_value("new-checkout", False, ctx)

It follows the nearest edge (``/sdk/v1/stream``, polling ``/sdk/v1/flags`` as the
fallback) and evaluates locally with the proxy's own evaluator (``crivline.flags``).
"""

from crivline_openfeature.errors import InvalidOptions, KeyRefused, ProviderError
from crivline_openfeature.options import ProviderOptions
from crivline_openfeature.provider import CrivlineProvider
from crivline_openfeature.sync import SyncStats

__all__ = [
    "CrivlineProvider",
    "InvalidOptions",
    "KeyRefused",
    "ProviderError",
    "ProviderOptions",
    "SyncStats",
]
