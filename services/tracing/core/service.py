"""The tracing core: ingest spans, derive message traces, answer queries, enforce retention."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterable, Sequence

from servicekit.errors import FieldViolation, InvalidArgumentError, NotFoundError, UnavailableError
from services.tracing.core.erasure import erase_sender
from services.tracing.core.message_events import Link, MessageEvent, filed_under, links_of_spans, message_event
from services.tracing.core.models import (
    TRACE_STATUSES,
    Analytics,
    AnalyticsQuery,
    SpanRecord,
    Trace,
    TracePage,
    TraceQuery,
)
from services.tracing.core.ports import IngestBatch, TraceRepository

log = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
MAX_TEXT_SEARCH = 200
"""Longest text search: the LIKE scan stays bounded (time window, short pattern)."""


class TracingCore:
    """Turns received spans into message traces and serves them. `clock` returns epoch seconds."""

    def __init__(self, store: TraceRepository, *, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock

    async def ingest(self, spans: Iterable[SpanRecord]) -> int:
        """Store a batch of spans and update the traces they belong to, in one transaction.

        Spans already stored (an exporter retrying a batch) are ignored, so a span never counts twice. Message event
        spans (receipts, edits, deletions) are filed under the trace of the message they are about, at once or when
        that message's trace becomes known (module `message_events`). Returns the number of spans stored.
        """
        unique = {(s.trace_id, s.span_id): s for s in spans if s.trace_id and s.span_id}
        if not unique:
            return 0
        now = self._clock()
        ordinary: list[SpanRecord] = []
        events: list[MessageEvent] = []
        for span in unique.values():
            event = message_event(span)
            if event is None:
                ordinary.append(span)
            else:
                events.append(event)
        try:
            async with self._store.ingest_batch() as batch:
                inserted = await batch.insert_spans(ordinary, received_at=now) if ordinary else []
                links = links_of_spans(inserted)
                if links:
                    await batch.save_links(links, created_at=now)
                if events:
                    await batch.record_events(events, received_at=now)
                if inserted:
                    trace_ids = {s.trace_id for s in inserted}
                    aggregates = await batch.lock_traces(sorted(trace_ids))
                    for span in sorted(inserted, key=lambda s: (s.start_ns, s.span_id)):
                        if span.trace_id in aggregates:
                            aggregates[span.trace_id].absorb(span)
                    # Checked once the traces are locked (an erasure that committed meanwhile is seen) and their
                    # senders known: the late spans of an erased trace, or a message its sender's erasure could not
                    # find yet, are erased as the erasure does. The links stay, so later events about those
                    # messages are dropped (_file_pending).
                    erased = await batch.erased_among(sorted(trace_ids), aggregates.values())
                    if erased:
                        await batch.erase(sorted(erased), erased_at=now)
                    # A trace that could not be locked was deleted meanwhile (retention, its instance's purge).
                    vanished = trace_ids - aggregates.keys() - erased
                    if vanished:
                        await batch.discard(sorted(vanished))
                    await batch.save_traces(
                        (a for trace_id, a in aggregates.items() if trace_id not in erased), updated_at=now
                    )
            filed = 0
            candidates = {*links_of_spans(ordinary), *(event.link for event in events)}
            if candidates:
                # After the commit, so that of two concurrent batches (one linking a message, one bringing an event
                # about it) the later one to commit sees the other's rows and files the event.
                async with self._store.ingest_batch() as batch:
                    filed = await self._file_pending(batch, sorted(candidates), now)
        except Exception as exc:
            # A lost batch is a hole in someone's trace: answer UNAVAILABLE, which OTLP exporters retry with
            # back-off (a deadlock with the retention sweep, a database restart), instead of INTERNAL, which they drop.
            log.warning("could not store %d spans: %s", len(unique), exc)
            raise UnavailableError("span store unavailable; retry the export") from exc
        return len(inserted) + filed

    @staticmethod
    async def _file_pending(batch: IngestBatch, candidates: Sequence[Link], now: float) -> int:
        """File the pending message events about `candidates` whose message's trace is known, as spans of that
        trace (not absorbed into its aggregate: see module `message_events`); returns how many were filed.

        Only the stored (first) copy of an event is filed, so a repeated event never shows twice, and a retried
        batch files what its failed attempt left pending."""
        pending = await batch.pending_events(candidates)
        if not pending:
            return 0
        known = await batch.traces_of(sorted({event.link for event in pending}))
        placed = [(event, known[event.link]) for event in pending if event.link in known]
        if not placed:
            return 0
        # An event about a message of an erased trace is dropped: marked filed (its span text cleared), not stored.
        erased = await batch.erased_among(sorted({trace_id for _, trace_id in placed}))
        kept = [(e, trace_id) for e, trace_id in placed if trace_id not in erased]
        stored = await batch.insert_spans([filed_under(e.span, trace_id) for e, trace_id in kept], received_at=now)
        await batch.mark_filed(placed)
        return len(stored)

    async def list_traces(self, query: TraceQuery) -> TracePage:
        """A page of message traces, newest first. Page 0 means 1; page size 0 means 50 and is capped at 500."""
        violations: list[FieldViolation] = []
        if query.page < 0:
            violations.append(FieldViolation("page", "must be 1 or more"))
        if query.page_size < 0:
            violations.append(FieldViolation("page_size", "must be between 1 and 500"))
        if query.status and query.status not in TRACE_STATUSES:
            violations.append(FieldViolation("status", f"unknown status {query.status!r}"))
        if len(query.text) > MAX_TEXT_SEARCH:
            violations.append(FieldViolation("text", f"at most {MAX_TEXT_SEARCH} characters"))
        if violations:
            raise InvalidArgumentError("invalid trace query", violations=violations)
        page = query.page or 1
        page_size = min(query.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        normalised = dataclasses.replace(query, page=page, page_size=page_size, text=query.text.strip())
        traces, total = await self._store.list_traces(normalised)
        return TracePage(traces=traces, total_count=total, page=page, page_size=page_size)

    async def get_trace(self, trace_id: str) -> Trace:
        """One message trace with payloads and spans; NotFoundError when no message trace has that id."""
        wanted = trace_id.strip().lower()
        if not wanted:
            raise InvalidArgumentError(
                "trace_id is required", violations=[FieldViolation("trace_id", "must be 32 hex characters")]
            )
        trace = await self._store.get_trace(wanted)
        if trace is None:
            raise NotFoundError(f"trace {wanted} not found", metadata={"trace_id": wanted})
        return trace

    async def erase_sender(self, instance_name: str, sender_ids: Sequence[str], session_ids: Sequence[str]) -> int:
        """Delete a person's traces on the instance (core/erasure.py); returns how many. Idempotent."""
        return await erase_sender(self._store, instance_name, sender_ids, session_ids, clock=self._clock)

    async def purge_instance(self, instance_name: str) -> int:
        """Delete every trace of a deleted instance (spans and payloads with them), so a new instance of the same name
        lists none of the old one's messages; returns how many traces went. Idempotent."""
        if not instance_name:
            raise InvalidArgumentError(
                "instance_name is required", violations=[FieldViolation("instance_name", "required")]
            )
        return await self._store.delete_instance(instance_name)

    async def analytics(self, query: AnalyticsQuery) -> Analytics:
        """Counts, success rate, duration percentiles and breakdowns of the traces `query` selects."""
        if (
            query.created_from is not None
            and query.created_before is not None
            and query.created_before < query.created_from
        ):
            raise InvalidArgumentError(
                "end_time is before start_time", violations=[FieldViolation("end_time", "must not precede start_time")]
            )
        return await self._store.analytics(query)

    async def cleanup(self, older_than_days: float, *, dry_run: bool) -> tuple[int, float]:
        """Delete (or, with `dry_run`, count) the traces created more than `older_than_days` ago; returns the count
        and the cut-off (epoch seconds). The operator's on-demand version of the retention sweep."""
        if older_than_days < 0:
            raise InvalidArgumentError(
                "older_than_days must not be negative",
                violations=[FieldViolation("older_than_days", "must be 0 or more")],
            )
        cutoff = self._clock() - older_than_days * 86_400
        if dry_run:
            return await self._store.count_older_than(cutoff), cutoff
        return await self._store.delete_older_than(cutoff), cutoff

    async def purge(self, retention_days: float) -> int:
        """Delete traces (with their spans) created more than `retention_days` ago; returns how many."""
        if retention_days <= 0:
            return 0
        return await self._store.delete_older_than(self._clock() - retention_days * 86_400)
