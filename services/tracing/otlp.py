"""OTLP protobuf → SpanRecord: the only place that knows the OpenTelemetry wire format of spans."""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from typing import Any

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2 as otlp_trace_pb2

from services.tracing.core.models import SpanRecord

log = logging.getLogger(__name__)

SERVICE_NAME_KEY = "service.name"

ExportObserver = Callable[[trace_service_pb2.ExportTraceServiceRequest, list[SpanRecord]], None]
EXPORT_OBSERVERS: list[ExportObserver] = []
"""Called with each Export request once its spans are stored (metrics, forwarding to the operator's collector).
Process-wide and set up by `__main__`, so the receiver does not need to know who listens. Observers must not block."""


def notify_exported(request: trace_service_pb2.ExportTraceServiceRequest, spans: list[SpanRecord]) -> None:
    """Tell every observer about a stored request; an observer's failure never fails the export."""
    for observer in EXPORT_OBSERVERS:
        try:
            observer(request, spans)
        except Exception:
            log.exception("export observer failed")


_STATUS_NAMES = {
    otlp_trace_pb2.Status.STATUS_CODE_UNSET: "unset",
    otlp_trace_pb2.Status.STATUS_CODE_OK: "ok",
    otlp_trace_pb2.Status.STATUS_CODE_ERROR: "error",
}


def any_value(value: common_pb2.AnyValue) -> Any:
    """An OTLP AnyValue as a plain JSON-compatible value (bytes become base64 text)."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "int_value":
        return value.int_value
    if kind == "double_value":
        return value.double_value
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return key_values(value.kvlist_value.values)
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    return None


def key_values(items: Any) -> dict[str, Any]:
    """Repeated OTLP KeyValue as a dict (a repeated key keeps its last value)."""
    return {item.key: any_value(item.value) for item in items}


def spans_from_request(request: trace_service_pb2.ExportTraceServiceRequest) -> list[SpanRecord]:
    """Every span of an Export request; spans without a valid trace or span id are dropped."""
    spans: list[SpanRecord] = []
    for resource_spans in request.resource_spans:
        service = key_values(resource_spans.resource.attributes).get(SERVICE_NAME_KEY, "")
        service_name = service if isinstance(service, str) else str(service)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                if len(span.trace_id) != 16 or len(span.span_id) != 8:
                    continue
                spans.append(
                    SpanRecord(
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex() if span.parent_span_id else "",
                        name=span.name,
                        start_ns=span.start_time_unix_nano,
                        end_ns=max(span.end_time_unix_nano, span.start_time_unix_nano),
                        status=_STATUS_NAMES.get(span.status.code, "unset"),
                        service_name=service_name,
                        attributes=key_values(span.attributes),
                    )
                )
    return spans
