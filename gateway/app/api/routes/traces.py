"""Message traces: GET /api/v1/traces and /api/v1/traces/{trace_id}, backed by TracingService."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from omni.tracing.v1 import trace_pb2, tracing_service_pb2

from gateway.app.api.deps import PrincipalDep, SettingsDep, TracingStubDep, scoped_instance_filter
from gateway.app.api.rpc import call
from gateway.app.mappers.timestamps import to_timestamp
from gateway.app.mappers.traces import STATUS_BY_NAME, trace_detail, trace_summary
from gateway.app.schemas.common import PAGE_MAX
from gateway.app.schemas.traces import TraceDetail, TraceList, TraceStatus
from servicekit.errors import FieldViolation, InvalidArgumentError, NotFoundError

router = APIRouter(prefix="/traces", tags=["traces"])

FilterText = Annotated[str | None, Query(max_length=256)]


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
) -> TraceList:
    """Traces newest first, filtered by instance, status, sender, session and creation time."""
    request = tracing_service_pb2.ListTracesRequest(
        instance_name=scoped_instance_filter(principal, instance_name),
        status=STATUS_BY_NAME[status] if status else trace_pb2.TRACE_STATUS_UNSPECIFIED,
        page=page,
        page_size=page_size,
        source_user_id=source_user_id or (_user_id_of_phone(source_phone) if source_phone else ""),
        session_id=session_id or "",
    )
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


@router.get("/{trace_id}", response_model=TraceDetail)
async def get_trace(trace_id: str, stub: TracingStubDep, settings: SettingsDep, principal: PrincipalDep) -> TraceDetail:
    """One trace with its payloads and spans. 404 when unknown, or of an instance a scoped key does not reach."""
    answer = await call(
        stub.GetTrace, tracing_service_pb2.GetTraceRequest(trace_id=trace_id), timeout=settings.api_rpc_timeout_seconds
    )
    if not principal.reaches(answer.trace.instance_name):
        raise NotFoundError(f"trace {trace_id} not found", metadata={"trace_id": trace_id})
    return trace_detail(answer.trace)
