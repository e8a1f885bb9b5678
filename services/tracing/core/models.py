"""Plain data the tracing core works on: received spans, derived traces and list queries."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from servicekit import trace_attributes as attrs

PAYLOAD_ATTRIBUTES: dict[str, str] = {
    "incoming": attrs.PAYLOAD_INCOMING,
    "agent_request": attrs.PAYLOAD_AGENT_REQUEST,
    "agent_response": attrs.PAYLOAD_AGENT_RESPONSE,
    "outgoing": attrs.PAYLOAD_OUTGOING,
}
"""Payload kind (the `<kind>_payload` field of a trace) → the span attribute that carries it."""

TRACE_STATUSES = frozenset({attrs.STATUS_PROCESSING, *attrs.TERMINAL_STATUSES})


@dataclass(frozen=True, slots=True)
class SpanRecord:
    """One finished span as received, independent of the OTLP wire format.

    `status` is the OpenTelemetry span status ("ok", "error" or "unset"), not the message status, which lives in
    the `omni.status` attribute. Attributes are plain JSON-compatible values.
    """

    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    start_ns: int
    end_ns: int
    status: str = "unset"
    service_name: str = ""
    attributes: dict[str, Any] = field(default_factory=dict)

    @property
    def duration_ms(self) -> float:
        """End minus start in milliseconds (never negative, even with skewed clocks)."""
        return max(0, self.end_ns - self.start_ns) / 1e6


@dataclass(frozen=True, slots=True)
class Trace:
    """A message trace as served: the derived summary, plus payloads and spans when fetched one by one."""

    trace_id: str
    status: str
    instance_name: str
    source_channel: str
    source_user_id: str
    session_id: str
    message_id: str
    channel_message_id: str
    error_message: str
    start_ns: int
    end_ns: int
    agent_duration_ns: int
    updated_at: float
    payloads: dict[str, Any] = field(default_factory=dict)
    """Payload kind → parsed JSON value; kinds never seen are absent."""
    spans: list[SpanRecord] = field(default_factory=list)
    attempts: int = 0
    next_retry_at: float | None = None
    """Epoch seconds of the next delivery attempt; None once the trace is final."""
    last_attempt_error: str = ""
    message_type: str = ""
    has_media: bool = False
    message_text: str = ""
    error_stage: str = ""

    @property
    def duration_ms(self) -> int:
        """From the first span's start to the last span's end."""
        return max(0, self.end_ns - self.start_ns) // 1_000_000

    @property
    def agent_duration_ms(self) -> int:
        """Total time spent in agent calls."""
        return self.agent_duration_ns // 1_000_000


@dataclass(frozen=True, slots=True)
class TraceQuery:
    """Filters and page of ListTraces; empty strings and None mean "any"."""

    instance_name: str = ""
    status: str = ""
    source_user_id: str = ""
    session_id: str = ""
    created_from: float | None = None
    """Epoch seconds, inclusive."""
    created_before: float | None = None
    """Epoch seconds, exclusive."""
    page: int = 1
    page_size: int = 50
    source_channel: str = ""
    message_type: str = ""
    has_media: bool | None = None
    text: str = ""
    """Case-insensitive substring of the message text."""


@dataclass(frozen=True, slots=True)
class AnalyticsQuery:
    """Which traces GetTraceAnalytics summarises; empty and None mean "any"."""

    instance_name: str = ""
    created_from: float | None = None
    created_before: float | None = None


@dataclass(frozen=True, slots=True)
class DurationStats:
    """Nearest-rank percentiles and mean of durations, in milliseconds."""

    p50_ms: float = 0.0
    p95_ms: float = 0.0
    avg_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class Bucket:
    """The traces sharing one value of a dimension."""

    key: str
    count: int
    error_count: int
    avg_duration_ms: float
    p50_duration_ms: float = 0.0
    """Exact below 100 ms; above, interpolated in buckets of two significant digits (storage._DURATION_BUCKET)."""
    p95_duration_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class Analytics:
    """The summary of a set of traces."""

    total: int
    success_rate: float
    duration: DurationStats
    agent_duration: DurationStats
    by_instance: list[Bucket]
    by_channel: list[Bucket]
    by_status: list[Bucket]
    by_message_type: list[Bucket]
    errors_by_stage: list[Bucket]


@dataclass(frozen=True, slots=True)
class TracePage:
    """One page of traces, newest first, with the number of traces matching the filter."""

    traces: list[Trace]
    total_count: int
    page: int
    page_size: int
