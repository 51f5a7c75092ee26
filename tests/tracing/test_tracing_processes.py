"""Tracing as an operator turns it on: real ``crivline`` processes configured by the
standard ``OTEL_*`` variables, exporting over OTLP/HTTP to a stand-in collector — and a
bad value refused in one line."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from support.waiting import eventually

from crivline.embedded import free_port
from crivline.seed import create_tenant


def _env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CRIVLINE_", "OTEL_"))}
    env.update(values)
    return env


@asynccontextmanager
async def collector() -> AsyncIterator[tuple[str, list[ExportTraceServiceRequest]]]:
    """An OTLP/HTTP endpoint that keeps every export it is sent, decoded."""
    received: list[ExportTraceServiceRequest] = []

    async def traces(request: web.Request) -> web.Response:
        export = ExportTraceServiceRequest()
        export.ParseFromString(await request.read())
        received.append(export)
        return web.Response(status=200, content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/traces", traces)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}", received
    finally:
        await runner.cleanup()


def spans_by_service(received: list[ExportTraceServiceRequest]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for export in received:
        for resource_spans in export.resource_spans:
            service = next(
                a.value.string_value
                for a in resource_spans.resource.attributes
                if a.key == "service.name"
            )
            for scope in resource_spans.scope_spans:
                out.setdefault(service, []).extend(s.name for s in scope.spans)
    return out


async def test_control_exports_its_write_spans_to_the_otlp_endpoint(
    crivline_cmd: list[str], database_url: str, db: asyncpg.Connection
) -> None:
    tenant = await create_tenant(db, "acme")
    port = free_port()
    async with collector() as (endpoint, received):
        proc = await asyncio.create_subprocess_exec(
            *crivline_cmd, "control",
            env=_env(
                CRIVLINE_DATABASE_URL=database_url, CRIVLINE_CONTROL_PORT=str(port),
                OTEL_EXPORTER_OTLP_ENDPOINT=endpoint, OTEL_BSP_SCHEDULE_DELAY="100",
            ),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            url = f"http://127.0.0.1:{port}"
            async with aiohttp.ClientSession() as session:

                async def created() -> bool:
                    async with session.post(
                        f"{url}/api/v1/projects",
                        json={"key": "shop", "name": "Shop"},
                        headers={"Authorization": f"Bearer {tenant.token}"},
                    ) as response:
                        return response.status == 201

                await eventually(
                    created, within=30, what="control", tolerate=(aiohttp.ClientConnectionError,)
                )
            await eventually(
                lambda: "control write" in spans_by_service(received).get("crivline-control", []),
                within=15,
                what="the write's span at the collector",
            )
        finally:
            proc.terminate()
            async with asyncio.timeout(20):
                _, stderr = await proc.communicate()
    assert proc.returncode == 0, stderr.decode()
    assert b"Traceback" not in stderr


@pytest.mark.parametrize(
    ("part", "variable", "value"),
    [
        ("control", "OTEL_TRACES_EXPORTER", "jaeger"),
        ("syncd", "OTEL_TRACES_EXPORTER", "jaeger"),
        ("proxy", "OTEL_TRACES_EXPORTER", "jaeger"),
        ("proxy", "OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
    ],
)
async def test_a_bad_otel_value_stops_a_part_with_one_line(
    crivline_cmd: list[str], part: str, variable: str, value: str
) -> None:
    otel = {"OTEL_TRACES_EXPORTER": "otlp", variable: value}
    env = _env(
        CRIVLINE_DATABASE_URL=f"postgresql://127.0.0.1:{free_port()}/none",
        CRIVLINE_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
        **otel,
    )
    proc = await asyncio.create_subprocess_exec(
        *crivline_cmd, part, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(60):
        _, stderr = await proc.communicate()
    text = stderr.decode()
    assert proc.returncode not in (0, None), text
    assert "Traceback" not in text
    lines = [line for line in text.splitlines() if not line.startswith("{")]  # JSON log lines
    assert len(lines) == 1, text
    assert variable in lines[0]
    assert repr(value) in lines[0]
