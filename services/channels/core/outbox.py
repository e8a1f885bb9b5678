"""Idempotent, ordered delivery of the parts of one reply through the outbox table.

The rules that make a retry never send a part twice:
- every part is stored (keyed by idempotency key + index) before anything is sent; a repeat reuses the rows;
- a part is marked `sending` in the database *before* its request leaves and `sent` with the channel id after;
- a part found `sending` is a send whose outcome is unknown (the process died, or the request timed out): it is
  looked up on the channel (`ChannelSender.find_sent`) before it may be sent again;
- calls with the same key are serialised in this process, and the `sending` claim is a compare-and-set, so
  another replica never sends a part this one is sending.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass

from servicekit.channels import Channel
from servicekit.errors import AlreadyExistsError, FailedPreconditionError, UnavailableError
from servicekit.instances import Instance
from services.channels.core.models import OutboundPart, OutboxRow, PartResult, PartState
from services.channels.core.ports import OutboxRepository
from services.channels.core.senders.base import (
    REASON_REJECTED,
    ChannelError,
    ChannelRejectedError,
    ChannelSender,
    ChannelTransientError,
    SendTarget,
)

log = logging.getLogger(__name__)

REASON_KEY_REUSED = "IDEMPOTENCY_KEY_REUSED"
"""ErrorInfo reason of a key already used for another message."""
REASON_TIMEOUT = "CHANNEL_TIMEOUT"
"""UNAVAILABLE because the channel did not confirm a send in time: it may be out, and a retry with the same key
looks it up before sending again (REST: 504)."""
REASON_RATE_LIMITED = "CHANNEL_RATE_LIMITED"
"""UNAVAILABLE because the channel throttles the account (WhatsApp's rate-overlimit); retry after the hint (REST:
429 with Retry-After)."""
REASON_UPSTREAM = "CHANNEL_UPSTREAM_ERROR"
"""UNAVAILABLE because the channel kept failing (a 5xx, a refused connection) through this call's tries (REST: 502
with the channel's words)."""


def body_hash(chat_id: str, parts: list[OutboundPart]) -> str:
    """A digest of the whole message a key stands for (its chat and every part), stored with the parts: a repeat
    with the same key must be the same message, and a different one is refused rather than answered with the
    results of the first."""
    body = {"chat_id": chat_id, "parts": [part.to_json() for part in parts]}
    encoded = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()
    return hashlib.sha256(encoded).hexdigest()


@dataclass(frozen=True)
class SendPolicy:
    """How hard one call tries before handing the retry back to the caller."""

    attempts: int = 3
    """Quick tries of a part within one call (transient failures that prove nothing was sent)."""
    backoff_seconds: float = 0.2
    """Pause before the second try; later pauses grow 2.5 times."""
    retry_after_seconds: float = 2.0
    """Retry hint for the caller when the channel gave none."""
    part_delay_seconds: float = 0.0
    """Pause between two parts sent in one call."""
    reconcile_window_seconds: float = 60.0
    """The lookup of a send of unknown outcome starts this far before it (clock skew with the channel)."""
    lease_seconds: float = 20.0
    """How long a `sending` part claimed by another process is presumed still in flight."""


class KeyLocks:
    """One asyncio.Lock per idempotency key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)


class OutboxSender:
    """Sends the parts of a reply in order, exactly once per (key, index), through the instance's channel sender."""

    def __init__(
        self,
        store: OutboxRepository,
        senders: Mapping[Channel, ChannelSender],
        *,
        policy: SendPolicy | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        worker_id: str = "",
        on_retry: Callable[[Channel], None] | None = None,
    ) -> None:
        self._store = store
        self._senders = senders
        self._policy = policy or SendPolicy()
        self._clock = clock
        self._sleep = sleep
        self._worker_id = worker_id or uuid.uuid4().hex
        self._on_retry = on_retry or (lambda channel: None)
        """Told of every send of a part that was tried before (this call's back-off or an earlier call's): the
        process counts them (omni_outbox_retries_total)."""
        self.locks = KeyLocks()

    async def send(self, instance: Instance, chat_id: str, key: str, parts: list[OutboundPart]) -> list[PartResult]:
        """Store the missing parts of `key`, send those not sent yet, and return every part's result.

        Raises FailedPreconditionError when a part was refused for good (now or earlier) and UnavailableError
        when the channel failed transiently (the caller retries later with the same key).
        """
        digest = body_hash(chat_id, parts)
        async with self.locks.hold(key):
            rows = await self._store.insert_parts(
                key, instance.name, chat_id, parts, self._clock(), owner=self._worker_id, body_hash=digest
            )
            fresh = len(rows) == len(parts)  # a new key: part 0 is already claimed by this call
            if not fresh:
                inserted = [row.part_index for row in rows]
                rows = await self._store.parts(key)
                await self._refuse_reuse(key, instance, digest, rows, inserted)
            results: list[PartResult] = []
            sent_in_this_call = False
            for row in rows:
                if row.state is PartState.SENT:
                    results.append(_result(row))
                    continue
                if row.state is PartState.FAILED:
                    raise FailedPreconditionError(
                        row.last_error or "the channel refused this message",
                        reason=row.error_reason or REASON_REJECTED,
                    )
                if sent_in_this_call and self._policy.part_delay_seconds > 0:
                    await self._sleep(self._policy.part_delay_seconds)
                claimed = fresh and row.part_index == 0
                message_id, sent_now = await self._deliver(instance, row, claimed=claimed)
                sent_in_this_call = sent_now or sent_in_this_call
                results.append(PartResult(index=row.part_index, state=PartState.SENT, channel_message_id=message_id))
            return results

    async def _refuse_reuse(
        self, key: str, instance: Instance, digest: str, rows: list[OutboxRow], inserted: list[int]
    ) -> None:
        """Raise ALREADY_EXISTS (IDEMPOTENCY_KEY_REUSED) when `key` was first used for another message or by another
        instance, after removing the parts this call added to it (a longer message than the first)."""
        reused = any(row.instance_name != instance.name for row in rows) or any(
            row.body_hash and row.body_hash != digest for row in rows
        )
        if not reused:
            return
        if inserted:
            await self._store.discard_parts(key, inserted)
        raise AlreadyExistsError(
            "this Idempotency-Key was already used for a different message; use a new key for a new message",
            reason=REASON_KEY_REUSED,
        )

    async def purge_instance(self, instance_name: str) -> int:
        """Delete every outbox part of a deleted instance; returns how many."""
        return await self._store.purge_instance(instance_name)

    async def results(self, key: str) -> list[PartResult]:
        """The stored results of `key` (empty when unknown)."""
        return [_result(row) for row in await self._store.parts(key)]

    async def _deliver(self, instance: Instance, row: OutboxRow, *, claimed: bool) -> tuple[str, bool]:
        """Bring one part to `sent`: its channel id, and True when this call sent it (rather than finding it out).

        `claimed` says the row was stored `sending` by this very call, so nothing can have been sent yet.
        """
        policy = self._policy
        pause = policy.backoff_seconds
        for attempt in range(1, max(1, policy.attempts) + 1):
            if not claimed:
                if row.state is PartState.SENDING:
                    reconciled = await self._reconcile(instance, row)
                    if reconciled is not None:
                        log.info("part %s/%d was already sent as %s", row.idempotency_key, row.part_index, reconciled)
                        await self._store.mark_sent(row.idempotency_key, row.part_index, reconciled, self._clock())
                        return reconciled, False
                if not await self._store.claim(
                    row.idempotency_key,
                    row.part_index,
                    seen_attempts=row.attempts,
                    owner=self._worker_id,
                    now=self._clock(),
                ):
                    raise UnavailableError("this message is being sent by another worker", retry_after=1.0)
                if row.attempts > 0:
                    self._on_retry(instance.channel)
            claimed = False
            try:
                message_id = await self._send_part(instance, row)
            except ChannelRejectedError as exc:
                await self._store.mark_failed(
                    row.idempotency_key, row.part_index, reason=exc.reason, error=exc.message, now=self._clock()
                )
                raise FailedPreconditionError(exc.message, reason=exc.reason) from None
            except ChannelTransientError as exc:
                if exc.outcome_unknown:
                    # The request may have been delivered: keep `sending` and reconcile on the next call.
                    await self._store.note_unknown(row.idempotency_key, row.part_index, exc.message, self._clock())
                    raise UnavailableError(
                        f"channel send outcome unknown: {exc.message}",
                        reason=REASON_TIMEOUT,
                        retry_after=policy.retry_after_seconds,
                    ) from None
                await self._store.release(row.idempotency_key, row.part_index, exc.message, self._clock())
                if exc.retry_after is not None or exc.rate_limited or attempt >= policy.attempts:
                    retry_after = exc.retry_after if exc.retry_after is not None else policy.retry_after_seconds
                    reason = REASON_RATE_LIMITED if exc.rate_limited else REASON_UPSTREAM
                    raise UnavailableError(
                        f"channel unavailable: {exc.message}", reason=reason, retry_after=retry_after
                    ) from None
                log.info("part %s/%d: %s; retrying", row.idempotency_key, row.part_index, exc.message)
                await self._sleep(pause)
                pause *= 2.5
                row = await self._store.part(row.idempotency_key, row.part_index)
                continue
            await self._store.mark_sent(row.idempotency_key, row.part_index, message_id, self._clock())
            return message_id, True
        raise AssertionError("unreachable: the last attempt always returns or raises")

    async def _send_part(self, instance: Instance, row: OutboxRow) -> str:
        part = row.part
        sender = self._senders[instance.channel]
        target = SendTarget(chat_id=row.chat_id, reply_to=part.quoted_message_id, thread_id=part.thread_id)
        if part.media is not None:
            return await sender.send_media(instance, target, part.media, part.text)
        if part.reaction is not None:
            return await sender.send_reaction(instance, target, part.reaction)
        if part.location is not None:
            return await sender.send_location(instance, target, part.location)
        if part.contacts:
            return await sender.send_contacts(instance, target, part.contacts)
        return await sender.send_text(instance, target, part.text)

    async def _reconcile(self, instance: Instance, row: OutboxRow) -> str | None:
        """The channel id of the part if the channel already has it; None when it is safe to send again."""
        now = self._clock()
        started = row.sending_started_at if row.sending_started_at is not None else now
        if row.sending_owner != self._worker_id:
            # Another process claimed it; unless its lease ran out, its request may still be in flight.
            remaining = started + self._policy.lease_seconds - now
            if remaining > 0:
                raise UnavailableError("this message is being sent by another worker", retry_after=remaining)
        since = started - self._policy.reconcile_window_seconds
        known = await self._store.sent_message_ids(instance.name, row.chat_id, since)
        try:
            return await self._senders[instance.channel].find_sent(instance, row.chat_id, row.part, since, known)
        except ChannelError as exc:
            raise UnavailableError(
                f"cannot check whether an earlier send went out: {exc.message}",
                retry_after=self._policy.retry_after_seconds,
            ) from None


def _result(row: OutboxRow) -> PartResult:
    return PartResult(
        index=row.part_index,
        state=row.state,
        channel_message_id=row.channel_message_id,
        error=row.last_error if row.state is PartState.FAILED else "",
    )
