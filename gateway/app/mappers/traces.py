"""omni.tracing.v1.Trace -> the contract's trace JSON."""

from __future__ import annotations

from typing import Any, cast, get_args

from google.protobuf import json_format, struct_pb2
from omni.tracing.v1 import trace_pb2

from gateway.app.mappers.timestamps import to_datetime
from gateway.app.schemas.traces import DeliveryStatus, SpanOut, TraceDetail, TraceStatus, TraceSummary
from servicekit import trace_attributes as attrs

STATUS_BY_NAME: dict[str, trace_pb2.TraceStatus.ValueType] = {
    "processing": trace_pb2.TRACE_STATUS_PROCESSING,
    "sent": trace_pb2.TRACE_STATUS_SENT,
    "error": trace_pb2.TRACE_STATUS_ERROR,
    "blocked": trace_pb2.TRACE_STATUS_BLOCKED,
    "ignored": trace_pb2.TRACE_STATUS_IGNORED,
}
_NAME_BY_STATUS: dict[trace_pb2.TraceStatus.ValueType, TraceStatus] = {
    trace_pb2.TRACE_STATUS_PROCESSING: "processing",
    trace_pb2.TRACE_STATUS_SENT: "sent",
    trace_pb2.TRACE_STATUS_ERROR: "error",
    trace_pb2.TRACE_STATUS_BLOCKED: "blocked",
    trace_pb2.TRACE_STATUS_IGNORED: "ignored",
}


def _payload(trace: trace_pb2.Trace, field: str) -> Any:
    """A payload snapshot as a JSON value, or None when the trace has none."""
    if not trace.HasField(field):  # type: ignore[arg-type]
        return None
    value: struct_pb2.Value = getattr(trace, field)
    return json_format.MessageToDict(value)


def _summary_fields(trace: trace_pb2.Trace) -> dict[str, Any]:
    return {
        "trace_id": trace.trace_id,
        "instance_name": trace.instance_name or None,
        "status": _NAME_BY_STATUS.get(trace.status, "processing"),
        "source_channel": trace.source_channel or None,
        "source_user_id": trace.source_user_id or None,
        "session_id": trace.session_id or None,
        "message_id": trace.message_id or None,
        "channel_message_id": trace.channel_message_id or None,
        "created_at": to_datetime(trace.created_at),
        "updated_at": to_datetime(trace.updated_at),
        "duration_ms": trace.duration_ms,
        "agent_duration_ms": trace.agent_duration_ms,
        "error_message": trace.error_message or None,
    }


def trace_summary(trace: trace_pb2.Trace) -> TraceSummary:
    """The list form of a trace."""
    return TraceSummary(**_summary_fields(trace))


def span_out(span: trace_pb2.Span) -> SpanOut:
    """One span with ISO times and its attributes as a JSON object."""
    return SpanOut(
        name=span.name,
        span_id=span.span_id,
        parent_span_id=span.parent_span_id or None,
        start_time=to_datetime(span.start_time),
        end_time=to_datetime(span.end_time),
        duration_ms=span.duration_ms,
        status=span.status or "unset",
        attributes=json_format.MessageToDict(span.attributes),
        service_name=span.service_name or None,
    )


def trace_detail(trace: trace_pb2.Trace) -> TraceDetail:
    """The full form of a trace: payloads and spans."""
    spans = [span_out(span) for span in trace.spans]
    return TraceDetail(
        **_summary_fields(trace),
        incoming_payload=_payload(trace, "incoming_payload"),
        agent_request_payload=_payload(trace, "agent_request_payload"),
        agent_response_payload=_payload(trace, "agent_response_payload"),
        outgoing_payload=_payload(trace, "outgoing_payload"),
        spans=spans,
        delivery_status=_delivery_status(spans),
    )


def _delivery_status(spans: list[SpanOut]) -> DeliveryStatus | None:
    """The most advanced status of the receipts of the hub's own sends among the spans (tracing files them there)."""
    statuses = [
        str(span.attributes.get(attrs.RECEIPT_STATUS) or "")
        for span in spans
        if span.attributes.get(attrs.MESSAGE_EVENT_FROM_ME) is True
    ]
    best = attrs.most_advanced_delivery(statuses)
    return cast(DeliveryStatus, best) if best in get_args(DeliveryStatus) else None
