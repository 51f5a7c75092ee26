"""Tracing for tests: each part gets a real SDK tracer provider (its own service name, as
in production) exporting synchronously to one shared ``InMemorySpanExporter``."""

from __future__ import annotations

from collections.abc import Iterable

from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from crivline.tracing import Tracing


def memory_tracing(
    service: str, exporter: InMemorySpanExporter, *, request_ratio: float = 1.0
) -> Tracing:
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Tracing(provider, request_ratio=request_ratio)


def service(span: ReadableSpan) -> str:
    return str(span.resource.attributes.get(SERVICE_NAME))


def named(spans: Iterable[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


def trace_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.trace_id


def parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def traceparent(trace: int, span: int, sampled: bool = True) -> str:
    return f"00-{trace:032x}-{span:016x}-{'01' if sampled else '00'}"
