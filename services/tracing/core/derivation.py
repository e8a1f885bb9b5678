"""How a message trace is derived from its spans (docs/CONVENTIONS.md, "Trace attributes").

The derivation is a fold: `TraceAggregate.absorb(span)` folds one span into what is known about its trace. Every
rule is chosen so that the result does not depend on the order in which spans arrive, because spans of one trace
come from several processes, in several OTLP batches, in any order:

- status: the terminal status (sent/error/blocked/ignored) of the span with the latest end time among spans
  carrying one, with that span's error message; "processing" when spans carry only non-terminal statuses; empty
  (not a message trace) when no span carries `omni.status`;
- identity fields (instance, channel, user, session, message ids): the first non-empty value seen;
- created_at/duration: min start, max end; agent duration: sum of the `omni.step=agent_call` spans;
- payloads: the one on the span that ended last (ties: the one seen last);
- attempts: the highest `omni.attempt`; the last attempt error and next retry time: those of the span that ended
  last among spans carrying one (ties: the first seen), so a failed attempt shows at once while the message is
  still processing;
- message type and text: first non-empty value; has_media: true once any span says so;
- error stage: `omni.error_stage` of the span whose terminal error status won, else that span's service.

The aggregate only keeps what the next span needs, so the store can update a trace from a new batch without
reading its older spans back.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from servicekit import trace_attributes as attrs
from services.tracing.core.models import PAYLOAD_ATTRIBUTES, SpanRecord

IDENTITY_ATTRIBUTES: dict[str, str] = {
    "instance_name": attrs.INSTANCE_NAME,
    "source_channel": attrs.SOURCE_CHANNEL,
    "source_user_id": attrs.SOURCE_USER_ID,
    "session_id": attrs.SESSION_ID,
    "message_id": attrs.MESSAGE_ID,
    "channel_message_id": attrs.CHANNEL_MESSAGE_ID,
}
"""Trace field → the span attribute whose first non-empty value it takes."""

MESSAGE_ATTRIBUTES: dict[str, str] = {
    "message_type": attrs.MESSAGE_TYPE,
    "message_text": attrs.MESSAGE_TEXT,
}
"""Like IDENTITY_ATTRIBUTES, added later (storage migration 3): what the inbound message was."""


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def payload_text(value: Any) -> str:
    """A payload attribute as stored: JSON text (services send JSON strings; anything else is encoded)."""
    if isinstance(value, str):
        return value
    return orjson.dumps(value, default=str).decode()


@dataclass
class TraceAggregate:
    """What is known about one trace so far. `status == ""` means no span made it a message trace yet."""

    trace_id: str
    status: str = ""
    status_end_ns: int | None = None
    """End time of the span whose terminal status won; None while no terminal status was seen."""
    error_message: str = ""
    instance_name: str = ""
    source_channel: str = ""
    source_user_id: str = ""
    session_id: str = ""
    message_id: str = ""
    channel_message_id: str = ""
    start_ns: int | None = None
    end_ns: int | None = None
    agent_duration_ns: int = 0
    payload_end_ns: dict[str, int] = field(default_factory=dict)
    """Payload kind → end time of the span that supplied the current payload."""
    new_payloads: dict[str, str] = field(default_factory=dict)
    """Payload kind → JSON text that replaced the stored one since the aggregate was loaded."""
    attempts: int = 0
    attempt_error: str = ""
    attempt_error_end_ns: int | None = None
    next_retry_at: float | None = None
    next_retry_end_ns: int | None = None
    message_type: str = ""
    message_text: str = ""
    has_media: bool = False
    error_stage: str = ""

    @property
    def is_message_trace(self) -> bool:
        """True once some span carried `omni.status`."""
        return self.status != ""

    def absorb(self, span: SpanRecord) -> None:
        """Fold one (new, never absorbed before) span of this trace into the aggregate."""
        self.start_ns = span.start_ns if self.start_ns is None else min(self.start_ns, span.start_ns)
        self.end_ns = span.end_ns if self.end_ns is None else max(self.end_ns, span.end_ns)
        values = span.attributes
        self._absorb_status(span, values)
        self._absorb_attempt(span, values)
        for name, key in (*IDENTITY_ATTRIBUTES.items(), *MESSAGE_ATTRIBUTES.items()):
            if not getattr(self, name):
                value = _text(values.get(key)).strip()
                if value:
                    setattr(self, name, value)
        if values.get(attrs.HAS_MEDIA) is True:
            self.has_media = True
        if values.get(attrs.STEP) == attrs.STEP_AGENT_CALL:
            self.agent_duration_ns += max(0, span.end_ns - span.start_ns)
        for kind, key in PAYLOAD_ATTRIBUTES.items():
            if key not in values or values[key] in (None, ""):
                continue
            current = self.payload_end_ns.get(kind)
            if current is None or span.end_ns >= current:
                self.payload_end_ns[kind] = span.end_ns
                self.new_payloads[kind] = payload_text(values[key])

    def _absorb_attempt(self, span: SpanRecord, values: dict[str, Any]) -> None:
        attempt = values.get(attrs.ATTEMPT)
        if isinstance(attempt, int) and not isinstance(attempt, bool) and attempt > self.attempts:
            self.attempts = attempt
        error = _text(values.get(attrs.ATTEMPT_ERROR)).strip()
        if error and (self.attempt_error_end_ns is None or span.end_ns > self.attempt_error_end_ns):
            self.attempt_error = error
            self.attempt_error_end_ns = span.end_ns
        retry_at = values.get(attrs.NEXT_RETRY_AT)
        is_time = isinstance(retry_at, int | float) and not isinstance(retry_at, bool)
        if is_time and (self.next_retry_end_ns is None or span.end_ns > self.next_retry_end_ns):
            self.next_retry_at = float(retry_at)  # type: ignore[arg-type]
            self.next_retry_end_ns = span.end_ns

    @property
    def shown_error(self) -> str:
        """The trace's error_message: the final one, else (still processing) the latest failed attempt's."""
        if self.status_end_ns is not None:
            return self.error_message
        return self.attempt_error

    def _absorb_status(self, span: SpanRecord, values: dict[str, Any]) -> None:
        status = _text(values.get(attrs.STATUS)).strip().lower()
        if not status:
            return
        if status in attrs.TERMINAL_STATUSES:
            # Strictly later wins: of two terminal spans ending at the same instant, the one seen first decides.
            if self.status_end_ns is None or span.end_ns > self.status_end_ns:
                self.status = status
                self.status_end_ns = span.end_ns
                self.error_message = _text(values.get(attrs.ERROR_MESSAGE))
                self.error_stage = _error_stage(span, values) if status == attrs.STATUS_ERROR else ""
        elif self.status_end_ns is None:
            # "processing" (or a status this version does not know) makes it a message trace still in flight.
            self.status = attrs.STATUS_PROCESSING


def _error_stage(span: SpanRecord, values: dict[str, Any]) -> str:
    stage = _text(values.get(attrs.ERROR_STAGE)).strip()
    if stage:
        return stage
    return span.service_name.removeprefix("omni-") or "unknown"


def derive(trace_id: str, spans: Iterable[SpanRecord]) -> TraceAggregate:
    """The aggregate of a whole set of spans (what the incremental updates must add up to)."""
    aggregate = TraceAggregate(trace_id=trace_id)
    for span in spans:
        aggregate.absorb(span)
    return aggregate
