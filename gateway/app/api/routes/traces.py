"""Message traces: GET /api/v1/traces (filtered list), /traces/{trace_id} (spans as a tree, step durations),
/traces/{trace_id}/payloads, /traces/analytics/summary and DELETE /traces/cleanup, backed by TracingService.

The list and the analytics cover the last 24 hours unless the caller gives a window or `all_time=true`: an
operator's first look is at today, and an unbounded scan of a million traces is never the default."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query
from omni.tracing.v1 import trace_pb2, tracing_service_pb2

from gateway.app.api.deps import AdminOnly, PrincipalDep, SettingsDep, TracingStubDep, scoped_instance_filter
from gateway.app.api.rpc import call
from gateway.app.mappers.timestamps import to_datetime, to_timestamp
from gateway.app.mappers.traces import STATUS_BY_NAME, trace_analytics, trace_detail, trace_payloads, trace_summary
from gateway.app.schemas.common import PAGE_MAX
from gateway.app.schemas.traces import (
    TraceAnalytics,
    TraceCleanup,
    TraceDetail,
    TraceList,
    TracePayloads,
    TraceStatus,
)
from servicekit.errors import FieldViolation, InvalidArgumentError, NotFoundError

router = APIRouter(prefix="/traces", tags=["traces"])

FilterText = Annotated[str | None, Query(max_length=256)]
DEFAULT_WINDOW = timedelta(hours=24)
MAX_CLEANUP_DAYS = 36_500


def _window(start: datetime | None, end: datetime | None, all_time: bool) -> tuple[datetime | None, datetime | None]:
    """The creation-time window a query covers: the one given, else the last 24 hours unless `all_time`."""
    # A naive datetime is UTC (as to_timestamp reads it).
    start = start.replace(tzinfo=UTC) if start is not None and start.tzinfo is None else start
    end = end.replace(tzinfo=UTC) if end is not None and end.tzinfo is None else end
    if start is not None and end is not None and end < start:
        raise InvalidArgumentError(
            "end is before start", violations=[FieldViolation("end_date", "must not precede start_date")]
        )
    if start is None and not all_time:
        start = (end or datetime.now(UTC)) - DEFAULT_WINDOW
    return start, end


def _user_id_of_phone(phone: str) -> str:
    """A phone number as the WhatsApp JID ingress records as the sender id (+55 11 9999-0000 -> 551199990000@...)."""
    digits = re.sub(r"\D", "", phone)
    if not digits:
        raise InvalidArgumentError(
            "source_phone has no digits", violations=[FieldViolation("source_phone", "must be a phone number")]
        )
    return f"{digits}@s.whatsapp.net"


@router.get("", response_model=TraceList)
async def list_traces(
    stub: TracingStubDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    instance_name: FilterText = None,
    status: TraceStatus | None = None,
    page: Annotated[int, Query(ge=1, le=PAGE_MAX)] = 1,
    page_size: Annotated[int, Query(ge=1, le=500)] = 50,
    source_user_id: FilterText = None,
    source_phone: FilterText = None,
    session_id: FilterText = None,
    start_date: datetime | None = None,
    end_date: datetime | None = None,
    channel: Annotated[str | None, Query(max_length=32)] = None,
    sender: FilterText = None,
    message_type: Annotated[str | None, Query(max_length=64)] = None,
    has_media: bool | None = None,
    q: Annotated[str | None, Query(max_length=200, description="Case-insensitive text search in the message")] = None,
    all_time: bool = False,
) -> TraceList:
    """Traces newest first, filtered by instance, status, channel, sender, session, message type, media, text and
    creation time (default: the last 24 hours unless `all_time=true`), with the total count of matches."""
    start_date, end_date = _window(start_date, end_date, all_time)
    request = tracing_service_pb2.ListTracesRequest(
        instance_name=scoped_instance_filter(principal, instance_name),
        status=STATUS_BY_NAME[status] if status else trace_pb2.TRACE_STATUS_UNSPECIFIED,
        page=page,
        page_size=page_size,
        source_user_id=source_user_id or sender or (_user_id_of_phone(source_phone) if source_phone else ""),
        session_id=session_id or "",
        source_channel=(channel or "").strip().lower(),
        message_type=message_type or "",
        text=(q or "").strip(),
    )
    if has_media is not None:
        request.has_media = has_media
    if start_date is not None:
        request.start_time.CopyFrom(to_timestamp(start_date))
    if end_date is not None:
        request.end_time.CopyFrom(to_timestamp(end_date))
    answer = await call(stub.ListTraces, request, timeout=settings.api_rpc_timeout_seconds)
    return TraceList(
        traces=[trace_summary(trace) for trace in answer.traces],
        page=page,
        page_size=page_size,
        total_count=answer.total_count,
    )


@router.get("/analytics/summary", response_model=TraceAnalytics)
async def analytics_summary(
    stub: TracingStubDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    instance_name: FilterText = None,
    start: datetime | None = None,
    end: datetime | None = None,
    all_time: bool = False,
) -> TraceAnalytics:
    """Totals, success rate, p50/p95 durations (overall and of the agent), breakdowns by instance, channel, status
    and message type, errors by stage; computed by the tracing service's database. Default: the last 24 hours."""
    start, end = _window(start, end, all_time)
    request = tracing_service_pb2.GetTraceAnalyticsRequest(
        instance_name=scoped_instance_filter(principal, instance_name)
    )
    if start is not None:
        request.start_time.CopyFrom(to_timestamp(start))
    if end is not None:
        request.end_time.CopyFrom(to_timestamp(end))
    answer = await call(stub.GetTraceAnalytics, request, timeout=settings.api_rpc_timeout_seconds)
    return trace_analytics(answer, request)


@router.delete("/cleanup", response_model=TraceCleanup, response_model_exclude_none=True, dependencies=[AdminOnly])
async def cleanup_traces(
    stub: TracingStubDep,
    settings: SettingsDep,
    older_than_days: Annotated[float, Query(ge=0, le=MAX_CLEANUP_DAYS)],
    dry_run: bool = True,
) -> TraceCleanup:
    """Delete the traces (with spans and payloads) created more than `older_than_days` ago; `dry_run` (the default,
    so a typo deletes nothing) only counts them. Admin key only."""
    answer = await call(
        stub.CleanupTraces,
        tracing_service_pb2.CleanupTracesRequest(older_than_days=older_than_days, dry_run=dry_run),
        timeout=settings.api_rpc_timeout_seconds,
    )
    older_than = to_datetime(answer.older_than) or datetime.now(UTC)
    if dry_run:
        return TraceCleanup(dry_run=True, would_delete=answer.count, older_than=older_than)
    return TraceCleanup(dry_run=False, deleted=answer.count, older_than=older_than)


@router.get("/{trace_id}/payloads", response_model=TracePayloads)
async def get_trace_payloads(
    trace_id: str, stub: TracingStubDep, settings: SettingsDep, principal: PrincipalDep
) -> TracePayloads:
    """The payload snapshots of a trace by stage: incoming, agent_request, agent_response, outgoing."""
    answer = await call(
        stub.GetTrace, tracing_service_pb2.GetTraceRequest(trace_id=trace_id), timeout=settings.api_rpc_timeout_seconds
    )
    if not principal.reaches(answer.trace.instance_name):
        raise NotFoundError(f"trace {trace_id} not found", metadata={"trace_id": trace_id})
    return trace_payloads(answer.trace)


@router.get("/{trace_id}", response_model=TraceDetail)
async def get_trace(trace_id: str, stub: TracingStubDep, settings: SettingsDep, principal: PrincipalDep) -> TraceDetail:
    """One trace with its payloads and spans. 404 when unknown, or of an instance a scoped key does not reach."""
    answer = await call(
        stub.GetTrace, tracing_service_pb2.GetTraceRequest(trace_id=trace_id), timeout=settings.api_rpc_timeout_seconds
    )
    if not principal.reaches(answer.trace.instance_name):
        raise NotFoundError(f"trace {trace_id} not found", metadata={"trace_id": trace_id})
    return trace_detail(answer.trace)
