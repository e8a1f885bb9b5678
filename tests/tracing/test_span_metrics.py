"""Metrics derived from received spans, unit-level and through the real tracing server: an OTel SDK exports over
OTLP/gRPC, the spans are stored, counted (read back over MetricsService.GetMetrics) and forwarded to a collector."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from omni.common.v1 import metrics_pb2, metrics_pb2_grpc
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from servicekit import metrics
from servicekit import trace_attributes as ta
from servicekit.database import Database
from servicekit.grpc_clients import open_channel
from servicekit.metrics import add_metrics_service
from services.tracing.config import Settings
from services.tracing.core import SpanRecord, TracingCore
from services.tracing.forwarder import CollectorTarget, OtlpForwarder
from services.tracing.otlp import EXPORT_OBSERVERS
from services.tracing.server import create_server
from services.tracing.span_metrics import SpanMetrics
from services.tracing.storage import TraceStore
from tests.helpers.mesh_auth import mesh_as
from tests.helpers.otlp_collector import OtlpCollector

S = 1_000_000_000


def sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def span(
    name: str, start: float, end: float, trace: str = "a" * 32, status: str = "unset", **attrs: object
) -> SpanRecord:
    return SpanRecord(
        trace_id=trace,
        span_id=f"{abs(hash((name, start))) % 16**16:016x}",
        parent_span_id="",
        name=name,
        start_ns=int(start * S),
        end_ns=int(end * S),
        status=status,
        attributes=dict(attrs),
    )


def test_counts_a_message_from_its_spans_in_any_batch_order() -> None:
    observer = SpanMetrics()
    sent_before = sample("omni_messages_total", channel="slack", status="sent")
    e2e_before = sample("omni_message_duration_seconds_count", channel="slack")
    e2e_sum_before = sample("omni_message_duration_seconds_sum", channel="slack")
    agent_before = sample("omni_agent_call_seconds_count")
    errors_before = sample("omni_agent_errors_total")
    retries_before = sample("omni_delivery_retries_total")
    ack_before = sample("omni_webhook_ack_seconds_count", channel="slack")
    # The router's batch first, then ingress's: the trace's start (the accept) is still found.
    observer.observe(
        [
            span("agent.call", 10.5, 11.0, status="error", **{ta.STEP: ta.STEP_AGENT_CALL}),
            span("ingress.dispatch", 10.2, 12.0, **{ta.ATTEMPT: "2"}),
        ]
    )
    observer.observe([span("ingress.accept", 10.0, 10.01, **{ta.SOURCE_CHANNEL: "slack", ta.STATUS: "processing"})])
    observer.observe([span("router.route", 10.3, 13.0, **{ta.SOURCE_CHANNEL: "slack", ta.STATUS: "sent"})])
    assert sample("omni_messages_total", channel="slack", status="sent") == sent_before + 1
    assert sample("omni_message_duration_seconds_count", channel="slack") == e2e_before + 1
    assert sample("omni_message_duration_seconds_sum", channel="slack") == pytest.approx(e2e_sum_before + 3.0)
    assert sample("omni_agent_call_seconds_count") == agent_before + 1
    assert sample("omni_agent_errors_total") == errors_before + 1
    assert sample("omni_delivery_retries_total") == retries_before + 1
    assert sample("omni_webhook_ack_seconds_count", channel="slack") == ack_before + 1


def test_remembers_a_bounded_number_of_traces() -> None:
    observer = SpanMetrics(remembered_traces=2)
    for i in range(5):
        observer.observe([span("x", i, i + 1, trace=f"{i:032x}")])
    assert len(observer._starts) == 2


@pytest.fixture
async def collector() -> AsyncIterator[OtlpCollector]:
    fake = OtlpCollector()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


async def test_through_the_tracing_server(tracing_db: Database, collector: OtlpCollector) -> None:
    server, port, _ = create_server(Settings(), TracingCore(TraceStore(tracing_db)), port=0)
    add_metrics_service(server)
    observer = SpanMetrics()
    forwarder = OtlpForwarder.for_target(CollectorTarget(endpoint=collector.endpoint))
    observers = [
        lambda _request, spans: observer.observe(spans),
        lambda request, _spans: forwarder.offer(request),
    ]
    EXPORT_OBSERVERS.extend(observers)
    forwarder.start()
    await server.start()
    channel = open_channel(f"127.0.0.1:{port}", tracing=False, mesh=mesh_as("gateway"))
    before = sample("omni_messages_total", channel="discord", status="blocked")
    try:
        provider = TracerProvider(resource=Resource.create({"service.name": "omni-router"}))
        exporter = OTLPSpanExporter(
            endpoint=f"127.0.0.1:{port}", insecure=True, timeout=5, headers=dict(mesh_as("router").metadata())
        )
        provider.add_span_processor(SimpleSpanProcessor(exporter))

        def route() -> str:
            with provider.get_tracer("t").start_as_current_span("router.route") as routed:
                routed.set_attribute(ta.SOURCE_CHANNEL, "discord")
                routed.set_attribute(ta.INSTANCE_NAME, "acme")
                routed.set_attribute(ta.STATUS, ta.STATUS_BLOCKED)
            provider.shutdown()
            return f"{routed.get_span_context().trace_id:032x}"

        trace_id = await asyncio.to_thread(route)
        assert await collector.wait_for(trace_id, "router.route") == {"router.route"}
        stub = metrics_pb2_grpc.MetricsServiceStub(channel)
        answer = await stub.GetMetrics(metrics_pb2.GetMetricsRequest(), timeout=5)
        [family] = [f for f in answer.families if f.name == "omni_messages"]
        values = {
            (s.labels["channel"], s.labels["status"]): s.value for s in family.samples if s.name.endswith("_total")
        }
        assert values[("discord", "blocked")] == before + 1
    finally:
        for item in observers:
            EXPORT_OBSERVERS.remove(item)
        await forwarder.stop()
        await channel.close(None)
        await server.stop(None)
