"""A local OTLP/gRPC collector: a real grpc.aio server implementing the OpenTelemetry TraceService Export, keeping
what it received so a test can check which spans an operator's Jaeger or Tempo would have seen."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2


class _Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, collector: OtlpCollector) -> None:
        self._collector = collector

    async def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self._collector.requests.append(request)
        self._collector.metadata.append(dict(context.invocation_metadata() or ()))
        if self._collector.failing:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "collector down")
        return trace_service_pb2.ExportTraceServiceResponse()


class OtlpCollector:
    """Start with `await start()`; `endpoint` is what OTEL_EXPORTER_OTLP_ENDPOINT should say."""

    def __init__(self) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self.metadata: list[dict[str, Any]] = []
        self.failing = False
        self._server: grpc.aio.Server | None = None
        self.port = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = grpc.aio.server()
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_Receiver(self), self._server)  # type: ignore[no-untyped-call]
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        await self._server.start()

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(0)

    def spans(self) -> list[tuple[str, trace_pb2.Span]]:
        """Every received span with its resource's service.name."""
        found: list[tuple[str, trace_pb2.Span]] = []
        for request in self.requests:
            for resource_spans in request.resource_spans:
                service = next(
                    (a.value.string_value for a in resource_spans.resource.attributes if a.key == "service.name"), ""
                )
                for scope in resource_spans.scope_spans:
                    found.extend((service, span) for span in scope.spans)
        return found

    def span_names_of_trace(self, trace_id: str) -> set[str]:
        """Names of the received spans of one trace (hex id)."""
        return {span.name for _, span in self.spans() if span.trace_id.hex() == trace_id}

    async def wait_for(self, trace_id: str, *names: str, timeout: float = 15.0) -> set[str]:
        """The span names of `trace_id` once every one of `names` arrived; AssertionError after `timeout`."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            got = self.span_names_of_trace(trace_id)
            if set(names) <= got:
                return got
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"spans {set(names) - got} of {trace_id} never reached the collector: {got}")
            await asyncio.sleep(0.1)
