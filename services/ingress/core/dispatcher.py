"""Delivers inbox rows to the router: leased, retried with back-off, in order per conversation, dead-lettered.

The loop is woken by every accept (and by every finished dispatch, which may unblock the next message of that
conversation) and polls as a safety net. It claims at most as many rows as it has free dispatch slots, so memory
stays bounded however large the backlog. While a row is dispatched its lease is renewed by a heartbeat; a
replica that dies stops renewing, and any replica takes the row over once the lease expires. A replica that
restarts with the same id takes its own rows back at once.

Router failures: an outcome is final (handled). Unavailable, deadline or connection failures are retried with
exponential back-off and full jitter until `max_attempts`, then the row is dead. NotFound (the instance was
deleted) and the other domain errors cannot succeed on retry, so the row is dead at once. A dead row leaves an
`ingress.dead_letter` span with omni.status=error in the message's trace, so nothing is lost silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from opentelemetry import propagate, trace
from opentelemetry.trace import Status, StatusCode

from servicekit import errors
from servicekit import trace_attributes as attrs
from servicekit.messages import InboundMessage, message_from_json
from servicekit.tasks import cancel_and_wait
from services.ingress.core.inbox import InboxRow
from services.ingress.core.ports import Inbox

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RouteOutcome:
    """The router's final outcome for a message: sent, error, blocked or ignored."""

    outcome: str
    error_message: str = ""


class RouterPort(Protocol):
    """Hands one message to the router (RouterService.RouteMessage behind an adapter)."""

    async def route(
        self, message: InboundMessage, *, attempt: int, final_attempt: bool, timeout: float
    ) -> RouteOutcome:
        """The outcome; raises UnavailableError/DeadlineExceededError (transient) or another OmniError (final)."""
        ...


@dataclass(frozen=True)
class DispatchPolicy:
    """How the dispatcher retries and leases; see the ingress settings for each field's meaning."""

    concurrency: int = 64
    route_deadline_seconds: float = 180.0
    max_attempts: int = 8
    retry_base_seconds: float = 0.5
    retry_max_seconds: float = 30.0
    lease_seconds: float = 30.0
    poll_interval_seconds: float = 0.2


TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    errors.UnavailableError,
    errors.DeadlineExceededError,
    ConnectionError,
    OSError,
    TimeoutError,
)


class Dispatcher:
    """The delivery loop of one replica (identified by `replica_id` in the leases it takes)."""

    def __init__(
        self,
        store: Inbox,
        router: RouterPort,
        *,
        replica_id: str,
        policy: DispatchPolicy | None = None,
        tracer: trace.Tracer | None = None,
        clock: Callable[[], float] = time.time,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._store = store
        self._router = router
        self._replica_id = replica_id
        self._policy = policy or DispatchPolicy()
        self._tracer = tracer or trace.get_tracer(__name__)
        self._clock = clock
        self._jitter = jitter
        self._wakeup = asyncio.Event()
        self._inflight: dict[asyncio.Task[None], str] = {}
        self._stopping = False
        self._loop_task: asyncio.Task[None] | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None

    @property
    def replica_id(self) -> str:
        return self._replica_id

    @property
    def inflight(self) -> int:
        """How many messages are being dispatched right now."""
        return len(self._inflight)

    def wake(self) -> None:
        """Look for due messages now (called after each accept)."""
        self._wakeup.set()

    async def start(self) -> None:
        """Take back this replica's leftover leases, then start the loop and the lease heartbeat."""
        released = await self._store.release_own_leases(self._replica_id, self._clock())
        if released:
            log.info("took back %d message(s) leased before the last stop", released)
        self._stopping = False
        self._loop_task = asyncio.create_task(self._run(), name=f"ingress-dispatch-{self._replica_id}")
        self._heartbeat_task = asyncio.create_task(self._heartbeat(), name=f"ingress-lease-{self._replica_id}")

    async def stop(self, grace: float) -> None:
        """Stop claiming and wait up to `grace` seconds for in-flight dispatches; the rest keep their lease."""
        self._stopping = True
        self._wakeup.set()
        if self._loop_task is not None:
            await self._loop_task
            self._loop_task = None
        if self._inflight:
            _, pending = await asyncio.wait(set(self._inflight), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                log.warning("%d dispatch(es) still running at stop; reclaimed on restart", len(pending))
                await asyncio.gather(*pending, return_exceptions=True)
        await cancel_and_wait(self._heartbeat_task)
        self._heartbeat_task = None

    async def _run(self) -> None:
        while not self._stopping:
            self._wakeup.clear()
            free = self._policy.concurrency - len(self._inflight)
            claimed = 0
            if free > 0:
                try:
                    rows = await self._store.claim(self._replica_id, free, self._clock(), self._policy.lease_seconds)
                except Exception:
                    log.exception("claiming inbox messages failed")
                    await asyncio.sleep(min(1.0, self._policy.poll_interval_seconds * 5))  # the database may be down
                    continue
                claimed = len(rows)
                for row in rows:
                    task = asyncio.create_task(self._dispatch(row), name=f"dispatch-{row.id}")
                    self._inflight[task] = row.id
                    task.add_done_callback(self._finished)
            if claimed and claimed == free:
                continue  # more may be due; the next pass sees no free slot and waits for one
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), self._policy.poll_interval_seconds)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._inflight.pop(task, None)
        self._wakeup.set()

    async def _heartbeat(self) -> None:
        interval = max(self._policy.lease_seconds / 3, 0.05)
        while True:
            await asyncio.sleep(interval)
            ids = list(self._inflight.values())
            if not ids:
                continue
            try:
                await self._store.renew_leases(self._replica_id, ids, self._clock(), self._policy.lease_seconds)
            except Exception:
                log.exception("renewing inbox leases failed")

    async def _dispatch(self, row: InboxRow) -> None:
        try:
            await self._deliver(row)
        except Exception:
            # Most likely the database failed while recording the result: the row keeps its lease, which is no
            # longer renewed, so it is retried once the lease expires.
            log.exception("recording the delivery of message %s failed", row.id)

    async def _deliver(self, row: InboxRow) -> None:
        parent = propagate.extract({"traceparent": row.traceparent}) if row.traceparent else None
        final = row.attempts >= self._policy.max_attempts
        with self._tracer.start_as_current_span("ingress.dispatch", context=parent) as span:
            span.set_attribute(attrs.INSTANCE_NAME, row.instance_name)
            span.set_attribute(attrs.MESSAGE_ID, row.id)
            span.set_attribute(attrs.CHANNEL_MESSAGE_ID, row.channel_message_id)
            span.set_attribute(attrs.ATTEMPT, row.attempts)
            try:
                message = message_from_json(row.message)
            except ValueError as exc:
                await self._dead(row, f"stored message is unreadable: {exc}", span)
                return
            try:
                result = await self._router.route(
                    message,
                    attempt=row.attempts,
                    final_attempt=final,
                    timeout=self._policy.route_deadline_seconds,
                )
            except errors.NotFoundError as exc:
                await self._dead(row, f"not found: {exc.message}", span)
            except TRANSIENT_ERRORS as exc:
                await self._transient(row, exc, span)
            except errors.OmniError as exc:
                await self._dead(row, f"{exc.reason}: {exc.message}", span)
            except Exception as exc:  # a bug in the adapter or the router: retry, dead-letter in the end
                log.exception("routing message %s failed unexpectedly", row.id)
                await self._transient(row, exc, span)
            else:
                span.set_attribute("omni.outcome", result.outcome)
                await self._store.mark_handled(row.id, self._replica_id, result.outcome, self._clock())

    async def _transient(self, row: InboxRow, exc: BaseException, span: trace.Span) -> None:
        reason = _describe(exc)
        span.set_status(Status(StatusCode.ERROR, reason))
        if row.attempts >= self._policy.max_attempts:
            await self._dead(row, reason, span)
            return
        delay = self.backoff(row.attempts)
        retry_after = getattr(exc, "retry_after", None)
        if isinstance(retry_after, int | float) and retry_after > delay:
            delay = float(retry_after)
        now = self._clock()
        # On the trace at once: why this attempt failed and when the next one runs (the trace stays `processing`).
        span.set_attribute(attrs.ATTEMPT_ERROR, exc.message if isinstance(exc, errors.OmniError) else reason)
        span.set_attribute(attrs.NEXT_RETRY_AT, now + delay)
        log.info("message %s attempt %d failed (%s); retry in %.2fs", row.id, row.attempts, reason, delay)
        await self._store.mark_retry(row.id, self._replica_id, now + delay, reason, now)

    def backoff(self, attempt: int) -> float:
        """Full-jitter exponential back-off after the `attempt`-th failure: uniform in [0, min(max, base·2^(n-1))]."""
        growth = 2.0 ** max(attempt - 1, 0)
        ceiling = min(self._policy.retry_max_seconds, self._policy.retry_base_seconds * growth)
        return self._jitter() * ceiling

    async def _dead(self, row: InboxRow, reason: str, dispatch_span: trace.Span) -> None:
        message = f"dead-lettered after {row.attempts} attempts: {reason}"
        dispatch_span.set_status(Status(StatusCode.ERROR, reason))
        log.warning("message %s %s", row.id, message)
        stored = await self._store.mark_dead(row.id, self._replica_id, reason, self._clock())
        if not stored:
            return  # the lease was lost to another replica, which now decides
        parent = propagate.extract({"traceparent": row.traceparent}) if row.traceparent else None
        with self._tracer.start_as_current_span("ingress.dead_letter", context=parent) as span:
            span.set_attribute(attrs.INSTANCE_NAME, row.instance_name)
            span.set_attribute(attrs.MESSAGE_ID, row.id)
            span.set_attribute(attrs.CHANNEL_MESSAGE_ID, row.channel_message_id)
            span.set_attribute(attrs.ATTEMPT, row.attempts)
            span.set_attribute(attrs.STATUS, attrs.STATUS_ERROR)
            span.set_attribute(attrs.ERROR_MESSAGE, message)
            span.set_status(Status(StatusCode.ERROR, message))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, errors.OmniError):
        return f"{exc.reason}: {exc.message}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
