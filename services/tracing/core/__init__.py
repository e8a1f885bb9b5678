"""The tracing core (no gRPC): span → message trace derivation, queries and retention."""

from __future__ import annotations

from services.tracing.core.derivation import TraceAggregate, derive
from services.tracing.core.models import SpanRecord, Trace, TracePage, TraceQuery
from services.tracing.core.service import TracingCore

__all__ = ["SpanRecord", "Trace", "TraceAggregate", "TracePage", "TraceQuery", "TracingCore", "derive"]
