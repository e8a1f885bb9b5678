"""OpenTelemetry set-up and payload snapshots.

Every service exports its spans over OTLP/gRPC to the tracing service (or anywhere OTLP is spoken). Payloads
are attached to spans as JSON strings with secrets redacted and large values capped, so a trace can show what
went in and out without leaking a key or storing a 100 MB base64 file.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from servicekit.settings import MeshSettings

MAX_PAYLOAD_CHARS = 16_384
MAX_STRING_CHARS = 1_024
_SECRET_KEY = re.compile(r"(api[-_]?key|apikey|token|secret|password|authorization|signature)", re.IGNORECASE)
REDACTED = "***"


def setup_tracing(service_name: str, settings: MeshSettings) -> TracerProvider:
    """Install a tracer provider that batches spans to the tracing service; returns it so it can be shut down."""
    provider = TracerProvider(resource=Resource.create({"service.name": f"omni-{service_name}"}))
    if settings.enable_tracing:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=settings.address_of("tracing"), insecure=True, timeout=5)
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


def redact(value: Any, *, depth: int = 0) -> Any:
    """A copy of a JSON-like value with secret-looking keys masked and long strings shortened."""
    if depth > 12:
        return "…"
    if isinstance(value, dict):
        return {
            str(k): (REDACTED if _SECRET_KEY.search(str(k)) and v not in (None, "") else redact(v, depth=depth + 1))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact(v, depth=depth + 1) for v in value[:200]]
    if isinstance(value, str) and len(value) > MAX_STRING_CHARS:
        return f"{value[:64]}…<{len(value)} chars>"
    return value


def payload_json(value: Any) -> str:
    """The redacted, size-capped JSON snapshot of a payload, for a span attribute."""
    text = orjson.dumps(redact(value), default=str).decode()
    if len(text) > MAX_PAYLOAD_CHARS:
        return orjson.dumps({"truncated": True, "size": len(text), "head": text[:MAX_PAYLOAD_CHARS]}).decode()
    return text
