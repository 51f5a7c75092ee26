"""OpenTelemetry tracing: one :class:`Tracing` per part, off unless ``OTEL_*`` says otherwise.

A change is one trace across the parts: control's span for the write is the parent of
syncd's span that applied it at each edge, which is the parent of each proxy process's
span that applied it. The trace context travels with the change as a W3C
``traceparent`` (``00-<trace id>-<span id>-<flags>``): in the bump's notification and
the bus message (``"tp"``), and in the edge Redis (the environment hash's
``traceparent`` field and each delta-log entry's ``tp``). A change made without a trace
(tracing off, a bump from the CLI) carries none, and everything works as before.

Whether tracing is on is decided once, by :func:`configure`, from the standard variables
(https://opentelemetry.io/docs/specs/otel/configuration/sdk-environment-variables/):
``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none`` turn it off; otherwise it is
on when ``OTEL_TRACES_EXPORTER`` names exporters (``otlp``, ``console``) or an OTLP
endpoint is set (``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``).
The SDK reads the rest itself (endpoint, headers, timeouts, ``OTEL_TRACES_SAMPLER``,
``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``, the batch processor's limits).

Off, a :class:`Tracing` holds no tracer and every call is a no-op; the proxy then
installs no tracing code on its request path at all. Nothing here runs at import time:
the SDK and the exporter are imported and started by :func:`configure` only.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    StatusCode,
    TraceFlags,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

from crivline.errors import ConfigError
from crivline.settings import Settings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

__all__ = [
    "DISABLED",
    "Attributes",
    "Span",
    "SpanKind",
    "StatusCode",
    "Tracing",
    "configure",
    "traceparent_of",
    "valid_traceparent",
]

Attributes = Mapping[str, AttributeValue]

# W3C Trace Context, version 00: version-traceid-parentid-flags, lower-case hex.
_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
_MAX_LINKS = 16  # links kept on one span when many changes were applied together
_EXPORTERS = ("otlp", "console")
_PROPAGATOR = TraceContextTextMapPropagator()


def valid_traceparent(value: object) -> str | None:
    """``value`` if it is a well-formed, non-zero W3C ``traceparent`` (version 00), else
    None: what arrives in a notification, a bus message or Redis is checked, never trusted."""
    if not isinstance(value, str) or len(value) != 55:
        return None
    match = _TRACEPARENT.fullmatch(value)
    if match is None or match[1] == _ZERO_TRACE or match[2] == _ZERO_SPAN:
        return None
    return value


def traceparent_of(span: Span | None) -> str | None:
    """The W3C ``traceparent`` naming ``span`` as the parent (None for no span)."""
    if span is None:
        return None
    ctx = span.get_span_context()
    if not ctx.is_valid:
        return None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def _span_context(traceparent: str | None) -> SpanContext | None:
    if valid_traceparent(traceparent) is None:
        return None
    assert traceparent is not None
    _version, trace_id, span_id, flags = traceparent.split("-")
    return SpanContext(
        int(trace_id, 16), int(span_id, 16), is_remote=True, trace_flags=TraceFlags(int(flags, 16))
    )


_ROOT = Context()  # immutable: a span started in it begins a trace


def _parent(traceparent: str | None) -> Context:
    """A context whose current span is the remote parent ``traceparent`` names; an empty
    one (the span becomes a root) when there is none or it is malformed."""
    remote = _span_context(traceparent)
    if remote is None:
        return _ROOT
    return trace.set_span_in_context(NonRecordingSpan(remote), _ROOT)


def _links(traceparents: Iterable[str | None], parent: str | None) -> list[Link]:
    links: list[Link] = []
    seen = {parent}
    for value in traceparents:
        if value in seen:
            continue
        seen.add(value)
        remote = _span_context(value)
        if remote is not None:
            links.append(Link(remote))
            if len(links) == _MAX_LINKS:
                break
    return links


class Tracing:
    """The tracer of one part, or none (tracing off: every method is a no-op)."""

    __slots__ = ("_provider", "_tracer", "request_ratio")

    def __init__(self, provider: TracerProvider | None = None, *, request_ratio: float = 0.0):
        self._provider = provider
        self._tracer = provider.get_tracer("crivline") if provider is not None else None
        # The share of SDK requests that get a span (the proxy); 0 with tracing off.
        self.request_ratio = request_ratio if provider is not None else 0.0

    @property
    def enabled(self) -> bool:
        return self._tracer is not None

    @contextmanager
    def span(
        self,
        name: str,
        *,
        parent: str | None = None,
        headers: Mapping[str, str] | None = None,
        links: Iterable[str | None] = (),
        attributes: Attributes | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        expected: tuple[type[BaseException], ...] = (),
    ) -> Iterator[Span | None]:
        """A span around the block, yielded (None with tracing off). Its parent is the
        ``traceparent`` given, or the one in ``headers`` (an HTTP request's), else it
        starts a trace. An exception leaving the block is recorded as the span's error,
        unless it is one of the ``expected`` types (a refused request is no fault);
        cancellation is never recorded and always propagates."""
        if self._tracer is None:
            yield None
            return
        context = _PROPAGATOR.extract(headers) if headers is not None else _parent(parent)
        with self._tracer.start_as_current_span(
            name,
            context=context,
            kind=kind,
            attributes=attributes,
            links=_links(links, parent),
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield span
            except Exception as exc:
                if not isinstance(exc, expected):
                    span.record_exception(exc)
                    span.set_status(trace.Status(StatusCode.ERROR, type(exc).__name__))
                raise

    def start(
        self,
        name: str,
        *,
        parent: str | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes | None = None,
    ) -> Span | None:
        """A started span the caller ends (``span.end()``), not made current: the lean
        form for the request path. None with tracing off."""
        if self._tracer is None:
            return None
        return self._tracer.start_span(
            name, context=_parent(parent), kind=kind, attributes=attributes
        )

    def record(
        self,
        name: str,
        started_ns: int,
        *,
        parent: str | None,
        links: Iterable[str | None] = (),
        attributes: Attributes | None = None,
    ) -> str | None:
        """A span that began at ``started_ns`` (``time.time_ns()``) and ends now, for work
        already done; returns its ``traceparent`` (None with tracing off)."""
        if self._tracer is None:
            return None
        span = self._tracer.start_span(
            name,
            context=_parent(parent),
            links=_links(links, parent),
            attributes=attributes,
            start_time=started_ns,
        )
        span.end()
        return traceparent_of(span)

    async def shutdown(self) -> None:
        """Export what is queued and stop the exporters (blocking work, in a thread)."""
        if self._provider is not None:
            await asyncio.to_thread(self._provider.shutdown)


DISABLED = Tracing()


def _truthy(raw: str | None) -> bool:
    return (raw or "").strip().lower() == "true"


def exporter_names(environ: Mapping[str, str]) -> list[str]:
    """The exporters the ``OTEL_*`` variables ask for; empty when tracing is off."""
    if _truthy(environ.get("OTEL_SDK_DISABLED")):
        return []
    raw = (environ.get("OTEL_TRACES_EXPORTER") or "").strip().lower()
    if not raw:
        endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get(
            "OTEL_EXPORTER_OTLP_ENDPOINT"
        )
        return ["otlp"] if (endpoint or "").strip() else []
    names = [name.strip() for name in raw.split(",") if name.strip()]
    if names == ["none"]:
        return []
    unknown = [name for name in names if name not in _EXPORTERS]
    if unknown:
        raise ConfigError(
            f"OTEL_TRACES_EXPORTER must name {', '.join(_EXPORTERS)} or none,"
            f" got {', '.join(repr(n) for n in unknown)}"
        )
    return list(dict.fromkeys(names))


def _otlp_exporter(environ: Mapping[str, str]) -> SpanExporter:
    protocol = (
        environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[import-not-found,unused-ignore]
                OTLPSpanExporter as GrpcSpanExporter,
            )
        except ImportError:
            raise ConfigError(
                "OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs the opentelemetry-exporter-otlp-proto-grpc"
                " package; install it or use http/protobuf (the default)"
            ) from None
        exporter: SpanExporter = GrpcSpanExporter()
        return exporter
    raise ConfigError(
        f"OTEL_EXPORTER_OTLP_PROTOCOL must be http/protobuf or grpc, got {protocol!r}"
    )


def configure(
    service: str, settings: Settings, environ: Mapping[str, str] | None = None
) -> Tracing:
    """The part's tracing as the ``OTEL_*`` variables say (see the module docstring);
    :data:`DISABLED` when they do not turn it on. The caller shuts it down at exit."""
    env = os.environ if environ is None else environ
    names = exporter_names(env)
    if not names:
        return DISABLED
    from opentelemetry.sdk.resources import SERVICE_NAME, OTELResourceDetector, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    exporters = [_otlp_exporter(env) if n == "otlp" else ConsoleSpanExporter() for n in names]
    # The operator's OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES win over our defaults.
    resource = Resource.create({SERVICE_NAME: service, "crivline.edge": settings.edge_id}).merge(
        OTELResourceDetector().detect()
    )
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return Tracing(provider, request_ratio=settings.trace_request_ratio)
