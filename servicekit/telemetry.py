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


_SECRET_FIELD = re.compile(
    rb'"([^"\\]*(?:api[-_]?key|token|secret|password|authorization|signature)[^"\\]*)"\s*:\s*"(?:[^"\\]|\\.)+"',
    re.IGNORECASE,
)
_LONG_STRING = re.compile(rb'"((?:[^"\\]|\\.){64})(?:[^"\\]|\\.){%d,}"' % (MAX_STRING_CHARS - 64))


def _shorten(match: re.Match[bytes]) -> bytes:
    return b'"' + match.group(1) + "…<long string>".encode() + b'"'


def payload_json(value: Any) -> str:
    """The JSON snapshot of a payload for a span attribute: string values of secret-looking keys masked, strings
    over MAX_STRING_CHARS shortened (base64 media), the whole capped at MAX_PAYLOAD_CHARS.

    It works on the serialised bytes with two regular expressions rather than walking the object in Python: the
    incoming webhook is snapshotted for every message, and the walk was a visible share of ingress's CPU.
    """
    raw = orjson.dumps(value, default=str)
    raw = _SECRET_FIELD.sub(b'"\\1":"' + REDACTED.encode() + b'"', raw)
    raw = _LONG_STRING.sub(_shorten, raw)
    text = raw.decode()
    if len(text) > MAX_PAYLOAD_CHARS:
        return orjson.dumps({"truncated": True, "size": len(text), "head": text[:MAX_PAYLOAD_CHARS]}).decode()
    return text
