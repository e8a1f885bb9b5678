"""Prometheus metrics derived from the spans the tracing service receives.

Why from spans: every step of a message (accept, delivery, agent call, send) already reports itself as a span
with its duration, status and channel, so one observer here counts what the whole mesh did, with no counters
sprinkled through the other services. Spans of one trace arrive in several batches in any order; the end-to-end
duration needs the trace's start, so the earliest start seen per trace is kept in a small bounded memory.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from servicekit import metrics
from servicekit import trace_attributes as attrs
from services.tracing.core.models import SpanRecord

ACCEPT_SPAN = "ingress.accept"
DISPATCH_SPAN = "ingress.dispatch"
NS_PER_SECOND = 1e9


def _text(value: object) -> str:
    return value if isinstance(value, str) else ("" if value is None else str(value))


class SpanMetrics:
    """Feeds `servicekit.metrics` from each received batch of spans (`observe`)."""

    def __init__(self, *, remembered_traces: int = 20_000) -> None:
        self._starts: OrderedDict[str, int] = OrderedDict()
        self._limit = remembered_traces

    def _trace_start(self, span: SpanRecord) -> int:
        """The earliest start seen for the span's trace, this span included."""
        known = self._starts.get(span.trace_id)
        start = span.start_ns if known is None else min(known, span.start_ns)
        self._starts[span.trace_id] = start
        self._starts.move_to_end(span.trace_id)
        while len(self._starts) > self._limit:
            self._starts.popitem(last=False)
        return start

    def observe(self, spans: Iterable[SpanRecord]) -> None:
        """Count one batch (call once per stored batch: a retried export must not count twice)."""
        ordered = sorted(spans, key=lambda s: s.start_ns)
        for span in ordered:
            self._trace_start(span)
        for span in ordered:
            values = span.attributes
            seconds = max(0, span.end_ns - span.start_ns) / NS_PER_SECOND
            channel = _text(values.get(attrs.SOURCE_CHANNEL)) or "unknown"
            if span.name == ACCEPT_SPAN:
                metrics.WEBHOOK_ACK_SECONDS.labels(channel=channel).observe(seconds)
            if values.get(attrs.STEP) == attrs.STEP_AGENT_CALL:
                metrics.AGENT_CALL_SECONDS.observe(seconds)
                if span.status == "error" or _text(values.get(attrs.ERROR_MESSAGE)):
                    metrics.AGENT_ERRORS.inc()
            if span.name == DISPATCH_SPAN and _attempt(values.get(attrs.ATTEMPT)) > 1:
                metrics.DELIVERY_RETRIES.inc()
            status = _text(values.get(attrs.STATUS)).strip().lower()
            if status in attrs.TERMINAL_STATUSES:
                metrics.MESSAGES.labels(channel=channel, status=status).inc()
                start = self._starts.get(span.trace_id, span.start_ns)
                metrics.MESSAGE_SECONDS.labels(channel=channel).observe(max(0, span.end_ns - start) / NS_PER_SECOND)


def _attempt(value: object) -> int:
    try:
        return int(value) if isinstance(value, int | float | str) else 0
    except ValueError:
        return 0
