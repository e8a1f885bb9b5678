"""A handler's spans join the caller's trace through gRPC metadata, and no extra span is recorded for the hop."""

from __future__ import annotations

from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from servicekit.grpc_clients import call, open_channel
from servicekit.grpc_server import bind, new_server


class _Recording(health_pb2_grpc.HealthServicer):
    def __init__(self, tracer: trace.Tracer) -> None:
        self.tracer = tracer

    async def Check(self, request: health_pb2.HealthCheckRequest, context: object) -> health_pb2.HealthCheckResponse:
        with self.tracer.start_as_current_span("handler"):
            return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)


async def test_server_spans_continue_the_client_trace() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    server = new_server("test", tracing=True)
    health_pb2_grpc.add_HealthServicer_to_server(_Recording(tracer), server)
    port = bind(server, "127.0.0.1", 0)
    await server.start()
    channel = open_channel(f"127.0.0.1:{port}", tracing=True)
    try:
        with tracer.start_as_current_span("caller") as caller:
            await call(health_pb2_grpc.HealthStub(channel).Check, health_pb2.HealthCheckRequest(), timeout=5)
        await call(health_pb2_grpc.HealthStub(channel).Check, health_pb2.HealthCheckRequest(), timeout=5)
    finally:
        await channel.close()
        await server.stop(None)
    spans = {s.name: s for s in exporter.get_finished_spans() if s.name == "caller"}
    handlers = [s for s in exporter.get_finished_spans() if s.name == "handler"]
    assert [s.name for s in exporter.get_finished_spans()].count("handler") == 2
    joined, alone = handlers
    assert joined.context.trace_id == caller.get_span_context().trace_id
    assert joined.parent is not None
    assert joined.parent.span_id == spans["caller"].context.span_id
    assert alone.parent is None
    assert alone.context.trace_id != caller.get_span_context().trace_id
