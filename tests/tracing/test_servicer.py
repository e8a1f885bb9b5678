"""The tracing server end to end: a real OpenTelemetry SDK exports over OTLP/gRPC, queries go through a real stub."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from omni.tracing.v1 import trace_pb2, tracing_service_pb2, tracing_service_pb2_grpc
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Status, StatusCode

from servicekit import trace_attributes as ta
from servicekit.database import Database
from servicekit.grpc_clients import open_channel
from servicekit.grpc_server import set_serving
from services.tracing.config import Settings
from services.tracing.core import TracingCore
from services.tracing.server import SERVICE_NAMES, create_server
from services.tracing.storage import TraceStore
from tests.helpers.mesh_auth import mesh_as


@dataclass
class Running:
    port: int
    stub: tracing_service_pb2_grpc.TracingServiceAsyncStub
    channel: grpc.aio.Channel


@pytest.fixture
async def running(tracing_db: Database) -> AsyncIterator[Running]:
    server, port, health = create_server(Settings(), TracingCore(TraceStore(tracing_db)), port=0)
    await server.start()
    await set_serving(health, SERVICE_NAMES, True)
    channel = open_channel(f"127.0.0.1:{port}", tracing=False, mesh=mesh_as("gateway"))
    try:
        yield Running(port, tracing_service_pb2_grpc.TracingServiceStub(channel), channel)
    finally:
        await channel.close(None)
        await server.stop(None)


def _provider(port: int, service: str) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    exporter = OTLPSpanExporter(
        endpoint=f"127.0.0.1:{port}", insecure=True, timeout=5, headers=dict(mesh_as("ingress").metadata())
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def _handle_message(port: int) -> tuple[str, str]:
    """What ingress and router do for one message, with the real SDK. Runs in a thread: SimpleSpanProcessor
    exports synchronously, and the server answering it lives on the test's event loop."""
    ingress, router = _provider(port, "omni-ingress"), _provider(port, "omni-router")
    try:
        with ingress.get_tracer("ingress").start_as_current_span("ingress.accept") as accept:
            accept.set_attributes(
                {
                    ta.INSTANCE_NAME: "acme",
                    ta.SOURCE_CHANNEL: "whatsapp",
                    ta.SOURCE_USER_ID: "5511999999999@s.whatsapp.net",
                    ta.MESSAGE_ID: "msg-1",
                    ta.CHANNEL_MESSAGE_ID: "3EB0C767D097B7C7C030",
                    ta.STATUS: ta.STATUS_PROCESSING,
                    ta.PAYLOAD_INCOMING: json.dumps({"event": "messages.upsert", "data": {"text": "hi"}}),
                }
            )
            tracer = router.get_tracer("router")
            with tracer.start_as_current_span("router.route") as route:
                route.set_attribute(ta.SESSION_ID, "sess-1")
                route.set_attribute(ta.PAYLOAD_AGENT_REQUEST, json.dumps({"message": "hi"}))
                with tracer.start_as_current_span("agent.call") as agent:
                    agent.set_attribute(ta.STEP, ta.STEP_AGENT_CALL)
                    agent.set_attribute("http.status_code", 200)
                    agent.set_attribute("tags", ["a", "b"])
                route.set_attribute(ta.PAYLOAD_AGENT_RESPONSE, json.dumps({"text": "hello"}))
                with tracer.start_as_current_span("channels.send") as send:
                    send.set_attribute(ta.STEP, ta.STEP_CHANNEL_SEND)
                    send.set_status(Status(StatusCode.ERROR, "first attempt 503"))
                route.set_attribute(ta.PAYLOAD_OUTGOING, json.dumps({"text": "hello"}))
                route.set_attribute(ta.STATUS, ta.STATUS_SENT)
            trace_id = f"{accept.get_span_context().trace_id:032x}"
            span_id = f"{accept.get_span_context().span_id:016x}"
    finally:
        ingress.shutdown()
        router.shutdown()
    return trace_id, span_id


async def test_spans_from_the_otel_sdk_become_a_message_trace(running: Running) -> None:
    trace_id, root_span_id = await asyncio.to_thread(_handle_message, running.port)

    listed = await running.stub.ListTraces(tracing_service_pb2.ListTracesRequest(instance_name="acme"), timeout=5)
    assert listed.total_count == 1
    summary = listed.traces[0]
    assert summary.trace_id == trace_id
    assert summary.status == trace_pb2.TRACE_STATUS_SENT
    assert summary.source_user_id == "5511999999999@s.whatsapp.net"
    assert not summary.HasField("incoming_payload")
    assert len(summary.spans) == 0

    got = (await running.stub.GetTrace(tracing_service_pb2.GetTraceRequest(trace_id=trace_id), timeout=5)).trace
    assert got.status == trace_pb2.TRACE_STATUS_SENT
    assert (got.instance_name, got.source_channel, got.session_id) == ("acme", "whatsapp", "sess-1")
    assert (got.message_id, got.channel_message_id) == ("msg-1", "3EB0C767D097B7C7C030")
    assert json_format.MessageToDict(got.incoming_payload) == {"event": "messages.upsert", "data": {"text": "hi"}}
    assert got.agent_request_payload.struct_value["message"] == "hi"
    assert got.agent_response_payload.struct_value["text"] == "hello"
    assert got.outgoing_payload.struct_value["text"] == "hello"
    assert got.duration_ms >= got.agent_duration_ms >= 0
    assert got.created_at.ToNanoseconds() > 0

    spans = {s.name: s for s in got.spans}
    assert [s.name for s in got.spans] == ["ingress.accept", "router.route", "agent.call", "channels.send"]
    assert spans["ingress.accept"].span_id == root_span_id
    assert spans["ingress.accept"].parent_span_id == ""
    assert spans["ingress.accept"].service_name == "omni-ingress"
    assert spans["router.route"].parent_span_id == root_span_id
    assert spans["router.route"].service_name == "omni-router"
    assert spans["agent.call"].parent_span_id == spans["router.route"].span_id
    assert json_format.MessageToDict(spans["agent.call"].attributes) == {
        "omni.step": "agent_call",
        "http.status_code": 200,
        "tags": ["a", "b"],
    }
    assert spans["channels.send"].status == "error"
    assert spans["agent.call"].status == "unset"
    assert spans["agent.call"].end_time.ToNanoseconds() >= spans["agent.call"].start_time.ToNanoseconds()


async def test_filters_through_the_stub(running: Running) -> None:
    await asyncio.to_thread(_handle_message, running.port)
    for request in (
        tracing_service_pb2.ListTracesRequest(instance_name="other"),
        tracing_service_pb2.ListTracesRequest(status=trace_pb2.TRACE_STATUS_ERROR),
        tracing_service_pb2.ListTracesRequest(session_id="sess-2"),
    ):
        assert (await running.stub.ListTraces(request, timeout=5)).total_count == 0
    found = await running.stub.ListTraces(
        tracing_service_pb2.ListTracesRequest(status=trace_pb2.TRACE_STATUS_SENT, page=1, page_size=1), timeout=5
    )
    assert found.total_count == 1


async def test_unknown_trace_is_not_found(running: Running) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await running.stub.GetTrace(tracing_service_pb2.GetTraceRequest(trace_id="0" * 32), timeout=5)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_bad_page_is_invalid_argument(running: Running) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await running.stub.ListTraces(tracing_service_pb2.ListTracesRequest(page=-2), timeout=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_health_reports_both_services(running: Running) -> None:
    health = health_pb2_grpc.HealthStub(running.channel)
    for name in ("omni.tracing.v1.TracingService", "opentelemetry.proto.collector.trace.v1.TraceService"):
        answer = await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
