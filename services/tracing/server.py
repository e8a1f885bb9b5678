"""Assembles the tracing gRPC server: TracingService and the OTLP TraceService on one port, plus health."""

from __future__ import annotations

import grpc
from grpc_health.v1._async import HealthServicer
from omni.tracing.v1 import tracing_service_pb2, tracing_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from servicekit.grpc_server import add_health_and_reflection, bind, new_server
from servicekit.key_resolver import server_auth
from servicekit.mesh_auth import KeyResolver
from services.tracing.config import Settings
from services.tracing.core import TracingCore
from services.tracing.servicer import OtlpTraceServicer, TracingServicer

TRACING_SERVICE_NAME = tracing_service_pb2.DESCRIPTOR.services_by_name["TracingService"].full_name
OTLP_TRACE_SERVICE_NAME = trace_service_pb2.DESCRIPTOR.services_by_name["TraceService"].full_name
SERVICE_NAMES = (TRACING_SERVICE_NAME, OTLP_TRACE_SERVICE_NAME)
"""Health (and reflection) names: "omni.tracing.v1.TracingService" and the OTLP receiver."""


def create_server(
    settings: Settings, core: TracingCore, *, port: int | None = None, resolve_key: KeyResolver | None = None
) -> tuple[grpc.aio.Server, int, HealthServicer]:
    """A server (not started) with both services, bound to `port` (settings.tracing_grpc_port when None; 0 picks
    a free one). It never traces itself: spans about exporting spans would feed back into the receiver forever.
    Scoped API keys are resolved by `resolve_key`, by default by asking the router."""
    auth = server_auth(settings, "tracing", resolve_key=resolve_key)
    server = new_server("tracing", tracing=False, auth=auth)
    tracing_service_pb2_grpc.add_TracingServiceServicer_to_server(TracingServicer(core), server)
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(OtlpTraceServicer(core), server)  # type: ignore[no-untyped-call]
    health = add_health_and_reflection(server, SERVICE_NAMES, reflection_enabled=settings.reflection_enabled)
    bound = bind(server, settings.grpc_host, settings.tracing_grpc_port if port is None else port, auth=auth)
    return server, bound, health
