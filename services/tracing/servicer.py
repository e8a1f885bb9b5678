"""gRPC servicers of the tracing service: the OTLP trace receiver and the TracingService queries. Thin: proto ↔
domain, then the core."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2, timestamp_pb2
from omni.tracing.v1 import trace_pb2, tracing_service_pb2, tracing_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from servicekit.errors import NotFoundError
from servicekit.principals import current_principal
from services.tracing.core import SpanRecord, Trace, TraceQuery, TracingCore
from services.tracing.core.models import AnalyticsQuery, Bucket, DurationStats
from services.tracing.otlp import notify_exported, spans_from_request

_STATUS_TO_PROTO = {
    "processing": trace_pb2.TRACE_STATUS_PROCESSING,
    "sent": trace_pb2.TRACE_STATUS_SENT,
    "error": trace_pb2.TRACE_STATUS_ERROR,
    "blocked": trace_pb2.TRACE_STATUS_BLOCKED,
    "ignored": trace_pb2.TRACE_STATUS_IGNORED,
}
_STATUS_FROM_PROTO = {value: name for name, value in _STATUS_TO_PROTO.items()}


def _timestamp_ns(ns: int) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(ns)
    return stamp


def _timestamp_s(seconds: float) -> timestamp_pb2.Timestamp:
    return _timestamp_ns(int(seconds * 1e9))


def _value(obj: Any) -> struct_pb2.Value:
    value = struct_pb2.Value()
    json_format.ParseDict(obj, value)
    return value


def _span_to_proto(span: SpanRecord) -> trace_pb2.Span:
    attributes = struct_pb2.Struct()
    attributes.update(span.attributes)
    return trace_pb2.Span(
        name=span.name,
        span_id=span.span_id,
        parent_span_id=span.parent_span_id,
        start_time=_timestamp_ns(span.start_ns),
        end_time=_timestamp_ns(span.end_ns),
        duration_ms=span.duration_ms,
        status=span.status,
        attributes=attributes,
        service_name=span.service_name,
    )


def trace_to_proto(trace: Trace) -> trace_pb2.Trace:
    """The wire form of a trace; payloads and spans only when the domain object carries them."""
    message = trace_pb2.Trace(
        trace_id=trace.trace_id,
        instance_name=trace.instance_name,
        status=_STATUS_TO_PROTO.get(trace.status, trace_pb2.TRACE_STATUS_PROCESSING),
        source_channel=trace.source_channel,
        source_user_id=trace.source_user_id,
        session_id=trace.session_id,
        created_at=_timestamp_ns(trace.start_ns),
        duration_ms=trace.duration_ms,
        agent_duration_ms=trace.agent_duration_ms,
        error_message=trace.error_message,
        message_id=trace.message_id,
        channel_message_id=trace.channel_message_id,
        updated_at=_timestamp_s(trace.updated_at),
        spans=[_span_to_proto(span) for span in trace.spans],
        attempts=trace.attempts,
        last_attempt_error=trace.last_attempt_error,
        message_type=trace.message_type,
        has_media=trace.has_media,
        message_text=trace.message_text,
        error_stage=trace.error_stage,
    )
    if trace.next_retry_at is not None:
        message.next_retry_at.CopyFrom(_timestamp_s(trace.next_retry_at))
    for kind, payload in trace.payloads.items():
        getattr(message, f"{kind}_payload").CopyFrom(_value(payload))
    return message


def _seconds(stamp: timestamp_pb2.Timestamp) -> float:
    return float(stamp.ToNanoseconds() / 1e9)


def _stats(stats: DurationStats) -> tracing_service_pb2.DurationStats:
    return tracing_service_pb2.DurationStats(p50_ms=stats.p50_ms, p95_ms=stats.p95_ms, avg_ms=stats.avg_ms)


def _buckets(buckets: list[Bucket]) -> list[tracing_service_pb2.AnalyticsBucket]:
    return [
        tracing_service_pb2.AnalyticsBucket(
            key=b.key,
            count=b.count,
            error_count=b.error_count,
            avg_duration_ms=b.avg_duration_ms,
            p50_duration_ms=b.p50_duration_ms,
            p95_duration_ms=b.p95_duration_ms,
        )
        for b in buckets
    ]


class OtlpTraceServicer(trace_service_pb2_grpc.TraceServiceServicer):
    """The standard OTLP trace receiver, so any OpenTelemetry exporter can feed the tracing service."""

    def __init__(self, core: TracingCore) -> None:
        self._core = core

    async def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        spans = spans_from_request(request)
        await self._core.ingest(spans)
        # After the commit: a batch the store refused is retried by the exporter and must be observed only once.
        notify_exported(request, spans)
        return trace_service_pb2.ExportTraceServiceResponse()


class TracingServicer(tracing_service_pb2_grpc.TracingServiceServicer):
    """Serves the message traces the core derived."""

    def __init__(self, core: TracingCore) -> None:
        self._core = core

    async def ListTraces(
        self, request: tracing_service_pb2.ListTracesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> tracing_service_pb2.ListTracesResponse:
        caller = current_principal()
        query = TraceQuery(
            # A scoped key lists its own instance's traces only, whatever filter it sent.
            instance_name=caller.instance_name if caller.is_scoped else request.instance_name,
            status=_STATUS_FROM_PROTO.get(request.status, ""),
            source_user_id=request.source_user_id,
            session_id=request.session_id,
            created_from=request.start_time.ToNanoseconds() / 1e9 if request.HasField("start_time") else None,
            created_before=request.end_time.ToNanoseconds() / 1e9 if request.HasField("end_time") else None,
            page=request.page,
            page_size=request.page_size,
            source_channel=request.source_channel,
            message_type=request.message_type,
            has_media=request.has_media if request.HasField("has_media") else None,
            text=request.text,
        )
        page = await self._core.list_traces(query)
        return tracing_service_pb2.ListTracesResponse(
            traces=[trace_to_proto(trace) for trace in page.traces], total_count=page.total_count
        )

    async def GetTrace(
        self, request: tracing_service_pb2.GetTraceRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> tracing_service_pb2.GetTraceResponse:
        trace = await self._core.get_trace(request.trace_id)
        if not current_principal().reaches(trace.instance_name):
            # Exactly what an unknown id answers: a scoped key cannot tell another tenant's trace exists.
            raise NotFoundError(f"trace {trace.trace_id} not found", metadata={"trace_id": trace.trace_id})
        return tracing_service_pb2.GetTraceResponse(trace=trace_to_proto(trace))

    async def GetTraceAnalytics(
        self, request: tracing_service_pb2.GetTraceAnalyticsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> tracing_service_pb2.GetTraceAnalyticsResponse:
        caller = current_principal()
        summary = await self._core.analytics(
            AnalyticsQuery(
                # A scoped key summarises its own instance only, whatever filter it sent.
                instance_name=caller.instance_name if caller.is_scoped else request.instance_name,
                created_from=_seconds(request.start_time) if request.HasField("start_time") else None,
                created_before=_seconds(request.end_time) if request.HasField("end_time") else None,
            )
        )
        return tracing_service_pb2.GetTraceAnalyticsResponse(
            total=summary.total,
            success_rate=summary.success_rate,
            duration=_stats(summary.duration),
            agent_duration=_stats(summary.agent_duration),
            by_instance=_buckets(summary.by_instance),
            by_channel=_buckets(summary.by_channel),
            by_status=_buckets(summary.by_status),
            by_message_type=_buckets(summary.by_message_type),
            errors_by_stage=_buckets(summary.errors_by_stage),
        )

    async def CleanupTraces(
        self, request: tracing_service_pb2.CleanupTracesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> tracing_service_pb2.CleanupTracesResponse:
        current_principal().require_admin()
        count, cutoff = await self._core.cleanup(request.older_than_days, dry_run=request.dry_run)
        return tracing_service_pb2.CleanupTracesResponse(
            count=count, older_than=_timestamp_s(cutoff), dry_run=request.dry_run
        )

    async def PurgeInstance(
        self, request: tracing_service_pb2.PurgeInstanceRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> tracing_service_pb2.PurgeInstanceResponse:
        deleted = await self._core.purge_instance(request.instance_name)
        return tracing_service_pb2.PurgeInstanceResponse(deleted_rows=deleted)

    async def EraseSender(
        self, request: tracing_service_pb2.EraseSenderRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> tracing_service_pb2.EraseSenderResponse:
        # Mesh only (not a public RPC): the router erases a user.
        deleted = await self._core.erase_sender(
            request.instance_name, list(request.sender_ids), list(request.session_ids)
        )
        return tracing_service_pb2.EraseSenderResponse(traces_deleted=deleted)
