"""What the core needs from storage, as protocols, so the core depends on no SQL (storage.TraceStore is the real
implementation; tests may use it directly on SQLite or PostgreSQL)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from services.tracing.core.derivation import TraceAggregate
from services.tracing.core.message_events import Link, MessageEvent
from services.tracing.core.models import Analytics, AnalyticsQuery, SpanRecord, Trace, TraceQuery


class IngestBatch(Protocol):
    """The steps of ingesting one Export batch, inside one transaction."""

    async def insert_spans(self, spans: Sequence[SpanRecord], received_at: float) -> list[SpanRecord]:
        """Store the spans not stored yet; returns those."""
        ...

    async def lock_traces(self, trace_ids: Sequence[str]) -> dict[str, TraceAggregate]:
        """The current aggregates of these traces (empty for new ones), locked against concurrent batches."""
        ...

    async def erased_among(self, trace_ids: Sequence[str], aggregates: Iterable[TraceAggregate] = ()) -> set[str]:
        """Which of these traces an erasure deleted, or would have deleted had they been stored when it ran (their
        sender or one-to-one session, read from `aggregates`, was erased after they started)."""
        ...

    async def erase(self, trace_ids: Sequence[str], erased_at: float) -> None:
        """Erase these traces as an erasure does (an erased trace keeps its first erasure time)."""
        ...

    async def discard(self, trace_ids: Sequence[str]) -> None:
        """Remove what this batch wrote for these traces (spans, trace rows, links)."""
        ...

    async def save_traces(self, aggregates: Iterable[TraceAggregate], updated_at: float) -> None:
        """Persist the updated aggregates."""
        ...

    async def save_links(self, links: Mapping[Link, str], created_at: float) -> None:
        """Remember which trace each (instance, channel message id) belongs to; a link already known is kept."""
        ...

    async def traces_of(self, links: Sequence[Link]) -> dict[Link, str]:
        """The trace of each of these messages that is known (others are absent)."""
        ...

    async def record_events(self, events: Sequence[MessageEvent], received_at: float) -> list[MessageEvent]:
        """Keep message events as pending; returns those that were new (an event key the instance recorded before
        is a repeat, dropped)."""
        ...

    async def pending_events(self, links: Sequence[Link]) -> list[MessageEvent]:
        """The pending events about these messages."""
        ...

    async def mark_filed(self, filed: Sequence[tuple[MessageEvent, str]]) -> None:
        """These events are now spans of the given trace: no longer pending."""
        ...


class TraceRepository(Protocol):
    """Spans and traces storage."""

    def ingest_batch(self) -> contextlib.AbstractAsyncContextManager[IngestBatch]:
        """A transaction for one batch."""
        ...

    async def list_traces(self, query: TraceQuery) -> tuple[list[Trace], int]:
        """Matching message traces (newest first, no payloads/spans) and their count."""
        ...

    async def get_trace(self, trace_id: str) -> Trace | None:
        """One message trace with payloads and spans."""
        ...

    async def analytics(self, query: AnalyticsQuery) -> Analytics:
        """The summary of the message traces `query` selects, computed by the database."""
        ...

    async def count_older_than(self, cutoff: float) -> int:
        """How many traces were created before `cutoff` (epoch seconds)."""
        ...

    async def delete_older_than(self, cutoff: float) -> int:
        """Delete traces created before `cutoff` (epoch seconds) with their spans."""
        ...

    async def delete_instance(self, instance_name: str) -> int:
        """Delete the traces of an instance with their spans; returns how many traces."""
        ...

    async def erase_sender(
        self, instance_name: str, sender_ids: Sequence[str], session_ids: Sequence[str], erased_at: float
    ) -> int:
        """Delete a person's traces on the instance and remember their ids (core/erasure.py); returns how many."""
        ...
