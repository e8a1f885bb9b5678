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
    """The final error; while still processing, the latest failed attempt's (agent status, timeout)."""
    attempts: int = 0
    """Delivery attempts made so far (0 when unknown)."""
    next_retry_at: datetime | None = None
    """When the inbox tries again after a failed attempt; null once the trace is final."""
    message_type: str | None = None
    has_media: bool = False
    error_stage: str | None = None
    """The step that failed (agent, channel, router, ingress) when the status is error."""


class SpanNode(BaseModel):
    """A span in the tree of a trace: its children are the spans whose parent it is."""

    span_id: str
    name: str
    service_name: str | None = None
    status: str
    duration_ms: float
    depth: int
    children: list[SpanNode]


class TraceSteps(BaseModel):
    """Where the time went, in milliseconds (null when the trace has no such step)."""

    ingress: float | None = None
    """From the first span (webhook accepted) to the router picking the message up: accept plus inbox wait."""
    agent: float | None = None
    """Agent calls (all attempts)."""
    send: float | None = None
    """Channel sends."""
    total: float
    """The whole trace."""


class TracePayloads(BaseModel):
    """The payload snapshots of a trace, by stage (null for a stage that has none)."""

    trace_id: str
    incoming: Any = None
    agent_request: Any = None
    agent_response: Any = None
    outgoing: Any = None


class TraceDetail(TraceSummary):
    """A trace with its payload snapshots and spans."""

    incoming_payload: Any = None
    agent_request_payload: Any = None
    agent_response_payload: Any = None
    outgoing_payload: Any = None
    spans: list[SpanOut]
    delivery_status: DeliveryStatus | None = None
    """How far the reply got, from the channel's receipts on the trace (most advanced wins); None without any."""
    span_tree: list[SpanNode] = []
    """The spans as a tree (roots: spans whose parent is not in the trace), children by start time."""
    steps: TraceSteps | None = None


class TraceList(BaseModel):
    """One page of traces, newest first."""

    traces: list[TraceSummary]
    page: int
    page_size: int
    total_count: int


class DurationStatsOut(BaseModel):
    """Nearest-rank percentiles and the mean, in milliseconds."""

    p50_ms: float
    p95_ms: float
    avg_ms: float


class AnalyticsBucketOut(BaseModel):
    """The traces sharing one value of a dimension."""

    key: str
    count: int
    error_count: int
    avg_duration_ms: float
    p50_duration_ms: float
    """Exact below 100 ms; above, interpolated within buckets of two significant digits (at most 5% off)."""
    p95_duration_ms: float


class TraceAnalytics(BaseModel):
    """GET /traces/analytics/summary."""

    start: datetime | None
    end: datetime | None
    instance_name: str | None
    total: int
    success_rate: float
    """sent / (sent + error); 0 when neither."""
    duration: DurationStatsOut
    agent_duration: DurationStatsOut
    by_instance: list[AnalyticsBucketOut]
    by_channel: list[AnalyticsBucketOut]
    by_status: list[AnalyticsBucketOut]
    by_message_type: list[AnalyticsBucketOut]
    errors_by_stage: list[AnalyticsBucketOut]


class TraceCleanup(BaseModel):
    """DELETE /traces/cleanup: how many traces went (or would go, with dry_run) and the cut-off."""

    dry_run: bool
    deleted: int | None = None
    would_delete: int | None = None
    older_than: datetime
