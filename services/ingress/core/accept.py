"""The accept path every channel shares: authenticate, parse, de-duplicate and store before answering.

Webhooks reach it through their channel's receiver (`receivers.registry`); pushed channels (the Discord bots ingress
runs) call `accept` with the event they parsed themselves. From there on nothing depends on the channel.

Evolution retries any webhook that is not answered within 30 s and may deliver each event twice (instance and
global webhooks), so the answer must be quick and idempotent: the inbox's unique key decides what is new, and
the dispatcher does the slow work afterwards. Each stored row carries the W3C traceparent of its
`ingress.accept` span so that delivery spans (and the router's) join the message's trace.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from opentelemetry import propagate, trace

from servicekit import errors
from servicekit import trace_attributes as attrs
from servicekit.channels import Channel
from servicekit.instances import Instance, InstanceDirectory
from servicekit.messages import InboundMessage, Sender, message_from_json, message_to_dict, message_to_json
from servicekit.metrics import IGNORED_WEBHOOKS
from servicekit.telemetry import payload_json
from services.ingress.core.ignored_traces import HOUSEKEEPING_REASONS, IgnoredTraceLimiter
from services.ingress.core.inbox import IGNORED, RECEIVED, InboxRow, MediaBlob, conversation_key
from services.ingress.core.media_store import DEFAULT_MAX_MEDIA_BYTES, MediaLibrary, separate_media
from services.ingress.core.message_events import MessageEventsReceived, record_message_events
from services.ingress.core.ports import Inbox, InstanceData
from services.ingress.core.receivers.base import NOT_ADDRESSED, Received
from services.ingress.core.receivers.registry import webhook_receiver
from services.ingress.core.receivers.webhook_auth import webhook_unauthenticated

log = logging.getLogger(__name__)

ACCEPTED = "accepted"
DUPLICATE = "duplicate"
IGNORED_DISPOSITION = "ignored"


@dataclass(frozen=True)
class WebhookResult:
    """What became of one webhook: accepted, duplicate or ignored."""

    disposition: str
    message_id: str = ""
    reason: str = ""
    trace_id: str = ""
    event: str = ""
    challenge: str = ""
    """The channel's handshake value the webhook answer must echo (Slack's url_verification), else ""."""


@dataclass(frozen=True)
class IngestResult:
    """The id of an ingested canonical message and whether it had been stored before."""

    message_id: str
    duplicate: bool
    trace_id: str = ""


@dataclass(frozen=True)
class DeadLetter:
    """A message whose delivery gave up."""

    id: str
    message: InboundMessage
    attempts: int
    last_error: str
    dead_at: float
    trace_id: str


class IngressCore:
    """ReceiveWebhook, IngestMessage and the dead-letter operations, over the inbox store.

    `on_accept` is called after each new row is stored (the dispatcher's wake-up), so a message is handed to
    the router at once rather than at the next poll. Inline files (Evolution's base64) are moved to the media store
    with the row (`media_store`); one over `max_media_bytes` is not kept.
    """

    def __init__(
        self,
        store: Inbox,
        instances: InstanceDirectory,
        *,
        on_accept: Callable[[], None] | None = None,
        tracer: trace.Tracer | None = None,
        clock: Callable[[], float] = time.time,
        also_purged: Sequence[InstanceData] = (),
        max_media_bytes: int = DEFAULT_MAX_MEDIA_BYTES,
        media: MediaLibrary | None = None,
        ignored_traces: IgnoredTraceLimiter | None = None,
        refresh: Callable[[str], Awaitable[Instance]] | None = None,
    ) -> None:
        self._store = store
        self._refresh = refresh
        self._ignored_traces = ignored_traces or IgnoredTraceLimiter()
        self._max_media_bytes = max_media_bytes
        self._media = media
        self._also_purged = tuple(also_purged)  # other per-instance stores (bot leases) a purge empties too
        self._instances = instances
        self._on_accept = on_accept or (lambda: None)
        self._tracer = tracer or trace.get_tracer(__name__)
        self._clock = clock

    async def receive_webhook(
        self, instance_name: str, channel: Channel | None, body: bytes, headers: Mapping[str, str]
    ) -> WebhookResult:
        """Store the message a raw webhook carries; raises Unauthenticated or InvalidArgument.

        `channel` is the channel whose webhook route the request came in on (None: the instance's own). An unknown
        instance, or one of another channel, fails exactly like a wrong secret, before anything is parsed: a
        stranger learns nothing about which instances exist."""
        try:
            instance = await self._instances.get(instance_name)
        except errors.NotFoundError:
            raise webhook_unauthenticated() from None
        if channel is not None and channel != instance.channel:
            raise webhook_unauthenticated()
        receiver = webhook_receiver(instance.channel)
        try:
            receiver.authenticate(instance, headers, body)
        except errors.UnauthenticatedError:
            if self._refresh is None:
                raise
            # The cache may not know a secret the channel was just given (a rotation): one fresh read decides.
            try:
                instance = await self._refresh(instance_name)
            except errors.NotFoundError:
                raise webhook_unauthenticated() from None
            receiver.authenticate(instance, headers, body)
        received, payload = receiver.parse(body, instance)
        return await self.accept(instance, received, payload)

    async def accept(self, instance: Instance, received: Received, payload: Mapping[str, Any]) -> WebhookResult:
        """Store what an authenticated channel event amounts to, under the `ingress.accept` span that starts (or
        continues) the message's trace; `payload` is the event as the channel sent it, for the trace."""
        if isinstance(received, MessageEventsReceived):
            # Receipts, edits, deletions: one span each, filed under their message's trace; no inbox row.
            record_message_events(self._tracer, instance, received)
            return WebhookResult(disposition=IGNORED_DISPOSITION, reason=received.reason, event=received.event)
        housekeeping = received.reason in HOUSEKEEPING_REASONS
        plainly_ignored = received.message is None and received.kind == "ignored" and not housekeeping
        if plainly_ignored and not self._ignored_traces.allow(instance.name):
            # Over the instance's rate of ignored traces: answered and counted, but no span at all.
            IGNORED_WEBHOOKS.labels(channel=instance.channel.value, traced="false").inc()
            return WebhookResult(
                disposition=IGNORED_DISPOSITION,
                reason=received.reason,
                event=received.event,
                challenge=received.challenge,
            )
        with self._tracer.start_as_current_span("ingress.accept") as span:
            span.set_attribute(attrs.INSTANCE_NAME, instance.name)
            span.set_attribute(attrs.SOURCE_CHANNEL, instance.channel.value)
            span.set_attribute("omni.event", received.event)
            span.set_attribute(attrs.PAYLOAD_INCOMING, payload_json(payload))
            trace_id = _trace_id(span)
            if received.kind == "message" and received.answer_if_stored:
                received = await self._in_known_context(instance, received)
            if received.message is not None or received.kind == "own_send":
                return await self._record(instance, received, span, trace_id)
            span.set_attribute("omni.ignored_reason", received.reason)
            if housekeeping:
                return WebhookResult(
                    disposition=IGNORED_DISPOSITION,
                    reason=received.reason,
                    event=received.event,
                    challenge=received.challenge,
                )
            traced = plainly_ignored or self._ignored_traces.allow(instance.name)
            IGNORED_WEBHOOKS.labels(channel=instance.channel.value, traced=str(traced).lower()).inc()
            if traced:
                # An `ignored` message trace with its reason: "check the traces" must show why nothing happened.
                span.set_attribute(attrs.STATUS, attrs.STATUS_IGNORED)
                span.set_attribute(attrs.ERROR_MESSAGE, received.reason)
            return WebhookResult(
                disposition=IGNORED_DISPOSITION,
                reason=received.reason,
                trace_id=trace_id if traced else "",
                event=received.event,
                challenge=received.challenge,
            )

    async def _in_known_context(self, instance: Instance, received: Received) -> Received:
        """The message as is when the inbox holds one of `answer_if_stored` (the bot is in that thread), else
        ignored as not addressed, and not stored: other people's thread chatter is none of the hub's business."""
        try:
            known = await self._store.holds_any(instance.name, instance.channel.value, received.answer_if_stored)
        except Exception as exc:
            log.exception("inbox lookup failed")
            raise errors.UnavailableError("the inbox is unavailable; retry later", retry_after=1.0) from exc
        if known:
            return received
        return Received(event=received.event, kind="ignored", reason=NOT_ADDRESSED)

    async def _record(self, instance: Instance, received: Received, span: trace.Span, trace_id: str) -> WebhookResult:
        now = self._clock()
        message = received.message or InboundMessage(
            channel_message_id=received.channel_message_id,
            chat_id="",
            sender=Sender(id=""),
            channel=instance.channel,
            raw_event=received.event,
        )
        message = replace(
            message, id=uuid.uuid4().hex, instance_name=instance.name, channel=instance.channel, received_at=now
        )
        state = RECEIVED if received.kind == "message" else IGNORED
        span.set_attribute(attrs.MESSAGE_ID, message.id)
        span.set_attribute(attrs.CHANNEL_MESSAGE_ID, message.channel_message_id)
        if message.sender.id:
            span.set_attribute(attrs.SOURCE_USER_ID, message.sender.id)
        separated = separate_media(message, max_bytes=self._max_media_bytes, now=now, keep=state == RECEIVED)
        message = separated.message
        if separated.blobs:
            span.set_attribute(attrs.MEDIA_BLOB_COUNT, len(separated.blobs))
        if separated.notes:
            span.set_attribute(attrs.MEDIA_NOTE, "; ".join(separated.notes))
            for note in separated.notes:
                span.add_event("media.not_stored", {attrs.MEDIA_NOTE: note})
        existing = await self._insert(message, state, received.event, now, separated.blobs)
        if existing is not None:
            span.set_attribute(attrs.MESSAGE_ID, existing)
            span.set_attribute("omni.duplicate", True)
            return WebhookResult(disposition=DUPLICATE, message_id=existing, event=received.event)
        if received.kind == "message":
            span.set_attribute(attrs.STATUS, attrs.STATUS_PROCESSING)
            self._on_accept()
            return WebhookResult(disposition=ACCEPTED, message_id=message.id, trace_id=trace_id, event=received.event)
        if received.is_message_event:
            # An ignored inbound message (fromMe, no content, broadcast) is a message trace that ends at once.
            span.set_attribute(attrs.STATUS, attrs.STATUS_IGNORED)
            span.set_attribute(attrs.ERROR_MESSAGE, received.reason)
        else:
            span.set_attribute("omni.ignored_reason", received.reason)
        return WebhookResult(
            disposition=IGNORED_DISPOSITION,
            message_id=message.id,
            reason=received.reason,
            trace_id=trace_id if received.is_message_event else "",
            event=received.event,
        )

    async def ingest_message(self, message: InboundMessage) -> IngestResult:
        """Store an already canonical message (its id is assigned here), through the same accept path."""
        violations = [
            errors.FieldViolation(name, "required")
            for name, value in (
                ("message.instance_name", message.instance_name),
                ("message.channel_message_id", message.channel_message_id),
                ("message.chat_id", message.chat_id),
            )
            if not value
        ]
        if violations:
            raise errors.InvalidArgumentError("the message misses required ids", violations=violations)
        instance = await self._instances.get(message.instance_name)
        received = Received(
            event=message.raw_event, kind="message", channel_message_id=message.channel_message_id, message=message
        )
        result = await self.accept(instance, received, message_to_dict(message))
        return IngestResult(
            message_id=result.message_id, duplicate=result.disposition == DUPLICATE, trace_id=result.trace_id
        )

    async def list_dead_letters(self, instance_name: str, page: int, page_size: int) -> tuple[list[DeadLetter], int]:
        """One page (1-based; page_size default 50, at most 500) of dead letters, newest first, and the total."""
        page = max(page, 1)
        page_size = 50 if page_size <= 0 else min(page_size, 500)
        rows, total = await self._store.list_dead(instance_name, page_size, (page - 1) * page_size)
        return [_dead_letter(row) for row in rows], total

    async def purge_instance(self, instance_name: str) -> int:
        """Delete everything ingress keeps for a deleted instance (inbox rows, dead letters, bot lease and cursors),
        so a new instance of the same name inherits nothing; returns how many rows went. Idempotent."""
        if not instance_name:
            raise errors.InvalidArgumentError(
                "instance_name is required", violations=[errors.FieldViolation("instance_name", "required")]
            )
        deleted = await self._store.purge_instance(instance_name)
        for store in self._also_purged:
            deleted += await store.purge_instance(instance_name)
        return deleted

    async def get_media(self, instance_name: str, blob_id: str) -> MediaBlob:
        """A received file the inbox kept apart from its message (GetMedia); raises NotFound when there is none for
        that instance, InvalidArgument without the names."""
        if self._media is None:
            raise errors.NotFoundError("this ingress keeps no media")
        return await self._media.get(instance_name, blob_id)

    async def redeliver_dead_letter(self, message_id: str, instance_name: str = "") -> str:
        """Put a dead message back in the inbox with attempts reset; raises NotFound (also for a letter of another
        instance than a non-empty `instance_name`: a scoped caller cannot tell it exists) or FailedPrecondition."""
        state = await self._store.redeliver(message_id, self._clock(), instance_name)
        if state == "":
            raise errors.NotFoundError(f"no dead letter with id {message_id!r}")
        if state is not None:
            raise errors.FailedPreconditionError(f"message {message_id!r} is {state}, not dead", reason="NOT_DEAD")
        self._on_accept()
        return message_id

    async def _insert(
        self, message: InboundMessage, state: str, event: str, now: float, blobs: Sequence[MediaBlob] = ()
    ) -> str | None:
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        row = InboxRow(
            id=message.id,
            instance_name=message.instance_name,
            channel=message.channel.value,
            channel_message_id=message.channel_message_id,
            chat_id=message.chat_id,
            conversation_key=conversation_key(message.instance_name, message.channel.value, message.chat_id),
            event=event,
            message=message_to_json(message),
            traceparent=carrier.get("traceparent", ""),
            sent_at=message.sent_at or now,
            received_ns=time.time_ns(),
            state=state,
            attempts=0,
            next_attempt_at=now,
            lease_owner=None,
            lease_until=None,
            last_error="",
            outcome="",
            dead_at=None,
            created_at=now,
            updated_at=now,
        )
        try:
            return await self._store.insert(row, blobs)
        except Exception as exc:
            log.exception("inbox insert failed")
            raise errors.UnavailableError("the inbox is unavailable; retry later", retry_after=1.0) from exc


def _trace_id(span: trace.Span) -> str:
    context = span.get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else ""


def trace_id_of(traceparent: str) -> str:
    """The trace id of a W3C traceparent ("00-<trace>-<span>-<flags>"), "" when malformed."""
    parts = traceparent.split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else ""


def _dead_letter(row: InboxRow) -> DeadLetter:
    return DeadLetter(
        id=row.id,
        message=message_from_json(row.message),
        attempts=row.attempts,
        last_error=row.last_error,
        dead_at=row.dead_at or row.updated_at,
        trace_id=trace_id_of(row.traceparent),
    )
