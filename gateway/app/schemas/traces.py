"""Trace JSON of the public contract: message traces and their spans."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel

TraceStatus = Literal["processing", "sent", "error", "blocked", "ignored"]
DeliveryStatus = Literal["pending", "sent", "delivered", "read", "played", "failed"]


class SpanOut(BaseModel):
    """One step of a trace."""

    name: str
    span_id: str
    parent_span_id: str | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    duration_ms: float
    status: str
    attributes: dict[str, Any]
    service_name: str | None = None


class TraceSummary(BaseModel):
    """A trace as listed (no payloads, no spans)."""

    trace_id: str
    instance_name: str | None = None
    status: TraceStatus
    source_channel: str | None = None
    source_user_id: str | None = None
    session_id: str | None = None
    message_id: str | None = None
    channel_message_id: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    duration_ms: int
    agent_duration_ms: int
    error_message: str | None = None


class TraceDetail(TraceSummary):
    """A trace with its payload snapshots and spans."""

    incoming_payload: Any = None
    agent_request_payload: Any = None
    agent_response_payload: Any = None
    outgoing_payload: Any = None
    spans: list[SpanOut]
    delivery_status: DeliveryStatus | None = None
    """How far the reply got, from the channel's receipts on the trace (most advanced wins); None without any."""


class TraceList(BaseModel):
    """One page of traces, newest first."""

    traces: list[TraceSummary]
    page: int
    page_size: int
    total_count: int
