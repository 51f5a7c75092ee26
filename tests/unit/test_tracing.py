"""Tracing without servers: when it is on, how a trace context is checked, carried and
merged, and what a span records (the SDK's in-memory exporter, no network)."""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from support.tracekit import memory_tracing, parent_id, span_id, trace_id, traceparent

from control.store.scope import Change
from crivline.errors import ConfigError, NotFound
from crivline.settings import Settings
from crivline.tracing import DISABLED, configure, exporter_names, traceparent_of, valid_traceparent
from syncd.follow import parse_wakeup
from syncd.replicate import Want

TRACE = 0x4BF92F3577B34DA6A3CE929D0E0E4736
SPAN = 0x00F067AA0BA902B7
TP = traceparent(TRACE, SPAN)


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    yield exporter
    exporter.shutdown()


# -- on or off ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "names"),
    [
        ({}, []),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, ["otlp"]),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, ["otlp"]),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "  "}, []),
        ({"OTEL_TRACES_EXPORTER": "console"}, ["console"]),
        ({"OTEL_TRACES_EXPORTER": "otlp, console,otlp"}, ["otlp", "console"]),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"}, []),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"}, []),
        ({"OTEL_SDK_DISABLED": "TRUE", "OTEL_TRACES_EXPORTER": "console"}, []),
        ({"OTEL_SDK_DISABLED": "false", "OTEL_TRACES_EXPORTER": "console"}, ["console"]),
    ],
)
def test_tracing_is_off_unless_the_otel_variables_turn_it_on(
    environ: dict[str, str], names: list[str]
) -> None:
    assert exporter_names(environ) == names


def test_an_unknown_exporter_is_refused_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"OTEL_TRACES_EXPORTER .* got 'jaeger'"):
        exporter_names({"OTEL_TRACES_EXPORTER": "otlp,jaeger"})


def test_configure_without_variables_is_the_disabled_tracing() -> None:
    tracing = configure("crivline-proxy", Settings.from_env({}), {})
    assert tracing is DISABLED
    assert not tracing.enabled
    assert tracing.request_ratio == 0


async def test_configure_with_an_exporter_gives_a_working_tracer() -> None:
    settings = Settings.from_env({}, trace_request_ratio=0.25)
    environ = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}
    tracing = configure("crivline-syncd", settings, environ)
    try:
        assert tracing.enabled
        assert tracing.request_ratio == 0.25
        with tracing.span("work") as span:
            assert span is not None
            assert span.is_recording()
    finally:
        await tracing.shutdown()


@pytest.mark.parametrize(
    ("protocol", "message"),
    [("grpc", "opentelemetry-exporter-otlp-proto-grpc"), ("http/json", "got 'http/json'")],
)
def test_an_unavailable_otlp_protocol_is_refused(protocol: str, message: str) -> None:
    environ = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": protocol}
    try:
        import opentelemetry.exporter.otlp.proto.grpc  # noqa: F401

        if protocol == "grpc":
            pytest.skip("the gRPC exporter is installed here")
    except ImportError:
        pass
    with pytest.raises(ConfigError, match=message):
        configure("crivline-control", Settings.from_env({}), environ)


def test_the_request_ratio_is_a_checked_setting() -> None:
    assert Settings.from_env({}).trace_request_ratio == 0.01
    assert Settings.from_env({"CRIVLINE_TRACE_REQUEST_RATIO": "1"}).trace_request_ratio == 1.0
    for bad in ("1.5", "-0.1", "often"):
        with pytest.raises(ConfigError, match="CRIVLINE_TRACE_REQUEST_RATIO"):
            Settings.from_env({"CRIVLINE_TRACE_REQUEST_RATIO": bad})


# -- the trace context on the wire ----------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        None,
        42,
        "",
        TP.upper(),  # W3C: lower-case hex only
        TP + "-00",
        "01" + TP[2:],  # another version
        traceparent(0, SPAN),
        traceparent(TRACE, 0),
        TP.replace("-", "_"),
    ],
)
def test_a_malformed_traceparent_is_not_accepted(value: object) -> None:
    assert valid_traceparent(value) is None


def test_a_well_formed_traceparent_is_accepted() -> None:
    assert valid_traceparent(TP) == TP
    assert valid_traceparent(traceparent(TRACE, SPAN, sampled=False)) is not None


def test_the_notification_and_bus_payload_carry_the_trace_context_only_when_traced() -> None:
    plain = Change("env", 3, "tenant", "project", 1.5)
    traced = Change("env", 3, "tenant", "project", 1.5, TP)
    assert orjson.loads(plain.payload()) == {"e": "env", "v": 3, "t": "tenant", "p": "project",
                                             "at": 1.5}  # fmt: skip
    assert orjson.loads(traced.payload()) == {**orjson.loads(plain.payload()), "tp": TP}


def test_a_wakeup_keeps_a_valid_trace_context_and_drops_a_bad_one() -> None:
    base = {"e": "env", "v": 3, "t": "tenant", "p": "project", "at": 1.5}
    woken = parse_wakeup(orjson.dumps({**base, "tp": TP}))
    assert woken is not None
    assert woken.traceparent == TP
    for bad in ("nonsense", 7, None):
        woken = parse_wakeup(orjson.dumps({**base, "tp": bad}))
        assert woken is not None
        assert woken.version == 3
        assert woken.traceparent is None
    plain = parse_wakeup(orjson.dumps(base))
    assert plain is not None
    assert plain.traceparent is None


def test_merged_wakeups_keep_the_newest_as_parent_and_the_others_for_links() -> None:
    tps = [traceparent(TRACE + i, SPAN + i) for i in range(3)]
    want = Want(5, traceparent=tps[0]).merge(Want(7, traceparent=tps[1]))
    want = want.merge(Want(6, traceparent=tps[2]))
    assert want.version == 7
    assert want.traceparent == tps[1]
    assert set(want.traced) == {tps[0], tps[2]}
    # A reconciliation (no version, no trace) merged in loses none of them.
    merged = want.merge(Want())
    assert merged.traceparent == tps[1]
    assert set(merged.traced) == set(want.traced)
    many = Want(1, traceparent=tps[0])
    for i in range(40):
        many = many.merge(Want(2 + i, traceparent=traceparent(TRACE, SPAN + 100 + i)))
    assert len(many.traced) == 16  # bounded


# -- spans ---------------------------------------------------------------------------------


def test_a_span_with_a_remote_parent_joins_its_trace(exporter: InMemorySpanExporter) -> None:
    tracing = memory_tracing("crivline-syncd", exporter)
    other = traceparent(TRACE + 1, SPAN + 1)
    with tracing.span("syncd apply", parent=TP, links=[TP, other, "bad", None]) as span:
        tp = traceparent_of(span)
    (done,) = exporter.get_finished_spans()
    assert trace_id(done) == TRACE
    assert parent_id(done) == SPAN
    assert tp == traceparent(TRACE, span_id(done))
    # The parent is not linked again, malformed values are dropped.
    assert [(link.context.trace_id, link.context.span_id) for link in done.links] == [
        (TRACE + 1, SPAN + 1)
    ]


def test_a_malformed_parent_starts_a_new_trace(exporter: InMemorySpanExporter) -> None:
    tracing = memory_tracing("crivline-syncd", exporter)
    with tracing.span("syncd apply", parent="00-nonsense"):
        pass
    (done,) = exporter.get_finished_spans()
    assert done.parent is None


def test_a_parent_that_was_not_sampled_is_followed(exporter: InMemorySpanExporter) -> None:
    tracing = memory_tracing("crivline-proxy", exporter)
    with tracing.span("apply", parent=traceparent(TRACE, SPAN, sampled=False)) as span:
        assert span is not None
        assert not span.is_recording()
        # Downstream parts are told it is not sampled either.
        tp = traceparent_of(span)
        assert tp is not None
        assert tp.startswith(f"00-{TRACE:032x}-")
        assert tp.endswith("-00")
    assert exporter.get_finished_spans() == ()


def test_errors_are_recorded_but_expected_refusals_are_not(
    exporter: InMemorySpanExporter,
) -> None:
    tracing = memory_tracing("crivline-control", exporter)
    with pytest.raises(RuntimeError), tracing.span("control write"):
        raise RuntimeError("boom")
    with pytest.raises(NotFound), tracing.span("control write", expected=(NotFound,)):
        raise NotFound("no such flag")
    failed, refused = exporter.get_finished_spans()
    assert failed.status.status_code is StatusCode.ERROR
    assert [e.name for e in failed.events] == ["exception"]
    assert refused.status.status_code is StatusCode.UNSET
    assert not refused.events


def test_record_makes_a_finished_span_from_a_start_time(exporter: InMemorySpanExporter) -> None:
    tracing = memory_tracing("crivline-proxy", exporter)
    tp = tracing.record("proxy apply", 1_000, parent=TP, attributes={"crivline.version": 4})
    (done,) = exporter.get_finished_spans()
    assert done.start_time == 1_000
    assert done.end_time is not None
    assert done.end_time > 1_000
    assert parent_id(done) == SPAN
    assert tp == traceparent(TRACE, span_id(done))
    assert done.attributes == {"crivline.version": 4}


def test_disabled_tracing_makes_no_spans() -> None:
    with DISABLED.span("control write", parent=TP) as span:
        assert span is None
    assert DISABLED.record("proxy apply", 1, parent=TP) is None
    assert traceparent_of(None) is None
