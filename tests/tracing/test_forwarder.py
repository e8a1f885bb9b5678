"""Forwarding received spans to an operator's OTLP collector: configuration from the standard OTel variables,
delivery to a real gRPC collector and to an HTTP/protobuf one, and dropping (counted) when the collector is down."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from services.tracing.forwarder import (
    GRPC,
    HTTP_PROTOBUF,
    CollectorTarget,
    OtlpForwarder,
    parse_headers,
    span_count,
    target_from_env,
)
from tests.helpers.otlp_collector import OtlpCollector


def export_request(
    trace_byte: int, names: tuple[str, ...] = ("ingress.accept",)
) -> trace_service_pb2.ExportTraceServiceRequest:
    spans = [
        trace_pb2.Span(
            trace_id=bytes([trace_byte]) * 16,
            span_id=bytes([i + 1]) * 8,
            name=name,
            start_time_unix_nano=1,
            end_time_unix_nano=2,
        )
        for i, name in enumerate(names)
    ]
    resource = trace_pb2.ResourceSpans(scope_spans=[trace_pb2.ScopeSpans(spans=spans)])
    resource.resource.attributes.append(
        common_pb2.KeyValue(key="service.name", value=common_pb2.AnyValue(string_value="omni-ingress"))
    )
    return trace_service_pb2.ExportTraceServiceRequest(resource_spans=[resource])


async def until(predicate: object, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.02)


def test_no_endpoint_means_no_forwarding() -> None:
    assert target_from_env({}) is None
    assert target_from_env({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}) is None


def test_standard_variables_and_their_precedence() -> None:
    target = target_from_env(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_HEADERS": "x-honeycomb-team=abc%3D%3D, x-dataset = omni ,junk",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "2500",
        }
    )
    assert target == CollectorTarget(
        endpoint="http://collector:4318/v1/traces",
        protocol=HTTP_PROTOBUF,
        headers={"x-honeycomb-team": "abc==", "x-dataset": "omni"},
        timeout_seconds=2.5,
    )
    specific = target_from_env(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://general:4317",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://traces:4317",
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "a=1",
            "OTEL_EXPORTER_OTLP_HEADERS": "b=2",
        }
    )
    assert specific is not None
    assert (specific.endpoint, specific.protocol, specific.headers) == ("http://traces:4317", GRPC, {"a": "1"})
    assert parse_headers("") == {}


def test_an_unknown_protocol_stops_start_up() -> None:
    with pytest.raises(ValueError, match="http/json"):
        target_from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"})


@pytest.mark.asyncio
async def test_forwards_to_a_grpc_collector_with_headers() -> None:
    collector = OtlpCollector()
    await collector.start()
    target = target_from_env(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint, "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20t"}
    )
    assert target is not None
    forwarder = OtlpForwarder.for_target(target)
    forwarder.start()
    try:
        forwarder.offer(export_request(1, ("ingress.accept", "router.route")))
        forwarder.offer(export_request(2))
        await until(lambda: forwarder.forwarded_spans == 3)
        assert collector.span_names_of_trace((bytes([1]) * 16).hex()) == {"ingress.accept", "router.route"}
        assert collector.metadata[0]["authorization"] == "Bearer t"
        assert forwarder.dropped_spans == 0
    finally:
        await forwarder.stop()
        await collector.stop()


@pytest.mark.asyncio
async def test_forwards_over_http_protobuf() -> None:
    received: list[trace_service_pb2.ExportTraceServiceRequest] = []

    async def handle(request: web.Request) -> web.Response:
        assert request.content_type == "application/x-protobuf"
        assert request.headers["x-key"] == "k"
        received.append(trace_service_pb2.ExportTraceServiceRequest.FromString(await request.read()))
        return web.Response(body=trace_service_pb2.ExportTraceServiceResponse().SerializeToString())

    app = web.Application()
    app.router.add_post("/v1/traces", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    target = target_from_env(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_HEADERS": "x-key=k",
        }
    )
    assert target is not None
    forwarder = OtlpForwarder.for_target(target)
    forwarder.start()
    try:
        forwarder.offer(export_request(3, ("a", "b")))
        await until(lambda: forwarder.forwarded_spans == 2)
        assert [span_count(r) for r in received] == [2]
    finally:
        await forwarder.stop()
        await runner.cleanup()


@pytest.mark.asyncio
async def test_a_down_collector_drops_and_counts_without_blocking() -> None:
    collector = OtlpCollector()
    await collector.start()
    collector.failing = True
    forwarder = OtlpForwarder.for_target(CollectorTarget(endpoint=collector.endpoint, timeout_seconds=1))
    forwarder.start()
    try:
        forwarder.offer(export_request(4, ("x", "y")))
        await until(lambda: forwarder.dropped_spans == 2)
        assert forwarder.forwarded_spans == 0
        collector.failing = False
        forwarder.offer(export_request(5))
        await until(lambda: forwarder.forwarded_spans == 1)
    finally:
        await forwarder.stop()
        await collector.stop()


@pytest.mark.asyncio
async def test_a_full_queue_drops_at_once() -> None:
    gate = asyncio.Event()

    async def stuck(request: trace_service_pb2.ExportTraceServiceRequest) -> None:
        await gate.wait()

    forwarder = OtlpForwarder(stuck, max_queued_requests=2)
    forwarder.start()
    try:
        for i in range(5):
            forwarder.offer(export_request(10 + i))  # never waits, whatever the collector does
        await asyncio.sleep(0.05)
        # One batch is in flight, two wait in the queue, the rest were dropped.
        assert forwarder.dropped_spans >= 2
        gate.set()
        await until(lambda: forwarder.forwarded_spans + forwarder.dropped_spans == 5)
    finally:
        await forwarder.stop()
