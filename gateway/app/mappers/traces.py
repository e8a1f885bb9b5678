"""omni.tracing.v1.Trace -> the contract's trace JSON."""

from __future__ import annotations

from typing import Any, cast, get_args

from google.protobuf import json_format, struct_pb2
from omni.tracing.v1 import trace_pb2, tracing_service_pb2

from gateway.app.mappers.timestamps import to_datetime
from gateway.app.schemas.traces import (
    AnalyticsBucketOut,
    DeliveryStatus,
    DurationStatsOut,
    SpanNode,
    SpanOut,
    TraceAnalytics,
    TraceDetail,
    TracePayloads,
    TraceStatus,
    TraceSteps,
    TraceSummary,
)
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
        "attempts": trace.attempts,
        "next_retry_at": to_datetime(trace.next_retry_at),
        "message_type": trace.message_type or None,
        "has_media": trace.has_media,
        "error_stage": trace.error_stage or None,
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
        span_tree=span_tree(spans),
        steps=trace_steps(spans, total_ms=float(trace.duration_ms)),
    )


def trace_payloads(trace: trace_pb2.Trace) -> TracePayloads:
    """The payload snapshots of a trace by stage."""
    return TracePayloads(
        trace_id=trace.trace_id,
        incoming=_payload(trace, "incoming_payload"),
        agent_request=_payload(trace, "agent_request_payload"),
        agent_response=_payload(trace, "agent_response_payload"),
        outgoing=_payload(trace, "outgoing_payload"),
    )


def span_tree(spans: list[SpanOut]) -> list[SpanNode]:
    """The spans nested under their parents. A span whose parent is not in the trace (the webhook's remote parent,
    a receipt filed from another trace) is a root; a parent cycle (bad input) cannot loop: each span is placed once."""
    known = {span.span_id for span in spans}
    children: dict[str | None, list[SpanOut]] = {}
    for span in sorted(spans, key=lambda s: (s.start_time is None, s.start_time, s.span_id)):
        parent = span.parent_span_id if span.parent_span_id in known else None
        children.setdefault(parent, []).append(span)
    placed: set[str] = set()

    def build(parent: str | None, depth: int) -> list[SpanNode]:
        nodes = []
        for span in children.get(parent, []):
            if span.span_id in placed:
                continue
            placed.add(span.span_id)
            nodes.append(
                SpanNode(
                    span_id=span.span_id,
                    name=span.name,
                    service_name=span.service_name,
                    status=span.status,
                    duration_ms=span.duration_ms,
                    depth=depth,
                    children=build(span.span_id, depth + 1),
                )
            )
        return nodes

    return build(None, 0)


def trace_steps(spans: list[SpanOut], *, total_ms: float) -> TraceSteps:
    """Per-step durations: ingress (first span to the first router span), agent calls, channel sends."""
    agent = [s.duration_ms for s in spans if s.attributes.get(attrs.STEP) == attrs.STEP_AGENT_CALL]
    send = [s.duration_ms for s in spans if s.attributes.get(attrs.STEP) == attrs.STEP_CHANNEL_SEND]
    starts = [s.start_time for s in spans if s.start_time is not None]
    routed = [s.start_time for s in spans if s.name == "router.route" and s.start_time is not None]
    ingress = (min(routed) - min(starts)).total_seconds() * 1000 if routed and starts else None
    return TraceSteps(
        ingress=round(ingress, 3) if ingress is not None else None,
        agent=round(sum(agent), 3) if agent else None,
        send=round(sum(send), 3) if send else None,
        total=total_ms,
    )


def _bucket(bucket: tracing_service_pb2.AnalyticsBucket) -> AnalyticsBucketOut:
    return AnalyticsBucketOut(
        key=bucket.key,
        count=bucket.count,
        error_count=bucket.error_count,
        avg_duration_ms=bucket.avg_duration_ms,
        p50_duration_ms=bucket.p50_duration_ms,
        p95_duration_ms=bucket.p95_duration_ms,
    )


def _stats(stats: tracing_service_pb2.DurationStats) -> DurationStatsOut:
    return DurationStatsOut(p50_ms=stats.p50_ms, p95_ms=stats.p95_ms, avg_ms=stats.avg_ms)


def trace_analytics(
    answer: tracing_service_pb2.GetTraceAnalyticsResponse, request: tracing_service_pb2.GetTraceAnalyticsRequest
) -> TraceAnalytics:
    """The analytics JSON, with the window and instance it covers."""
    return TraceAnalytics(
        start=to_datetime(request.start_time),
        end=to_datetime(request.end_time),
        instance_name=request.instance_name or None,
        total=answer.total,
        success_rate=answer.success_rate,
        duration=_stats(answer.duration),
        agent_duration=_stats(answer.agent_duration),
        by_instance=[_bucket(b) for b in answer.by_instance],
        by_channel=[_bucket(b) for b in answer.by_channel],
        by_status=[_bucket(b) for b in answer.by_status],
        by_message_type=[_bucket(b) for b in answer.by_message_type],
        errors_by_stage=[_bucket(b) for b in answer.errors_by_stage],
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
