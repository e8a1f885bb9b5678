"""OpenTelemetry set-up and payload snapshots.

Every service exports its spans over OTLP/gRPC to the tracing service (or anywhere OTLP is spoken). Payloads
are attached to spans as JSON strings with secrets redacted and large values capped (`payload_json`, from
`servicekit.redaction`), so a trace can show what went in and out without leaking a key or storing a 100 MB
base64 file.
"""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from servicekit.mesh_auth import MeshCredentials
from servicekit.payload_policy import PayloadPolicy, configure_payloads, payload_json
from servicekit.redaction import MAX_PAYLOAD_CHARS, MAX_STRING_CHARS, REDACTED
from servicekit.settings import MeshSettings

__all__ = [
    "MAX_PAYLOAD_CHARS",
    "MAX_STRING_CHARS",
    "REDACTED",
    "PayloadPolicy",
    "configure_payloads",
    "payload_json",
    "setup_tracing",
]


def setup_tracing(service_name: str, settings: MeshSettings) -> TracerProvider:
    """Install a tracer provider that batches spans to the tracing service; returns it so it can be shut down."""
    provider = TracerProvider(resource=Resource.create({"service.name": f"omni-{service_name}"}))
    configure_payloads(PayloadPolicy.from_env())
    if settings.enable_tracing:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        # The OTLP Export RPC is internal to the mesh: the exporter presents the mesh credential like any client.
        mesh = MeshCredentials.from_settings(settings, service_name)
        tls = mesh.channel_credentials()
        exporter = OTLPSpanExporter(
            endpoint=settings.address_of("tracing"),
            insecure=tls is None,
            credentials=tls,
            headers=dict(mesh.metadata()),
            timeout=5,
        )
        provider.add_span_processor(
            BatchSpanProcessor(
                exporter,
                schedule_delay_millis=settings.span_export_interval_ms,
                max_queue_size=20_000,
                max_export_batch_size=512,
            )
        )
    trace.set_tracer_provider(provider)
    return provider
