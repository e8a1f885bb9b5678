"""Events about a message, not messages: delivery receipts, edits and deletions, recorded as one span each.

They are not stored in the inbox and never reach the agent: nothing is answered, nothing needs a retry, and a busy
instance gets several per reply (server ack, delivered, read). So one webhook costs one span and no row. The span
names the message it is about (`REFERS_TO_CHANNEL_MESSAGE_ID`); the tracing service files it under that message's
trace, where someone looking at the message will look for it (CONTRACT.md: "delivery receipts show on the trace of
the message they refer to"). Channel parsers build the events; this module is channel-neutral.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from opentelemetry import trace

from servicekit import trace_attributes as attrs
from servicekit.instances import Instance
from servicekit.telemetry import payload_json
from services.ingress.core.receivers.base import Received

RECEIPT = "receipt"
MESSAGE_EDITED = "message_edited"
MESSAGE_DELETED = "message_deleted"
EVENT_KINDS = (RECEIPT, MESSAGE_EDITED, MESSAGE_DELETED)
"""Each kind is also the webhook's ignored reason and the span name's suffix (`whatsapp.receipt`)."""

CHAT_ID_ATTRIBUTE = "omni.chat_id"


@dataclass(frozen=True)
class MessageEvent:
    """Something that happened to a message the hub saw or sent."""

    kind: str
    """One of EVENT_KINDS."""
    channel_message_id: str
    """The message it is about (WhatsApp `key.id`)."""
    chat_id: str = ""
    status: str = ""
    """For a receipt: one of `trace_attributes.DELIVERY_STATUSES`, or "failed"."""
    from_me: bool = False
    """The message was sent by the instance's own account."""
    text: str = ""
    """For an edit: the new text."""
    version: str = ""
    """What tells two edits of one message apart (the channel's edit time), so both are kept."""

    @property
    def key(self) -> str:
        """Identifies the event, not the webhook: a repeat of it (a retried or doubled webhook, or the delete that
        Evolution reports both as `messages.delete` and as a REVOKE) has the same key and is kept once."""
        if self.kind == RECEIPT:
            return f"{RECEIPT}:{self.channel_message_id}:{self.status}"
        if self.kind == MESSAGE_EDITED:
            version = self.version or hashlib.sha256(self.text.encode()).hexdigest()[:16]
            return f"{MESSAGE_EDITED}:{self.channel_message_id}:{version}"
        return f"{self.kind}:{self.channel_message_id}"


@dataclass(frozen=True)
class MessageEventsReceived(Received):
    """A webhook that carried message events (`kind` is "ignored": nothing goes to the inbox)."""

    events: tuple[MessageEvent, ...] = ()


def message_events_received(event: str, events: list[MessageEvent]) -> MessageEventsReceived:
    """The parse result of a webhook carrying `events` (at least one); its reason is the first event's kind."""
    return MessageEventsReceived(
        event=event,
        kind="ignored",
        reason=events[0].kind,
        channel_message_id=events[0].channel_message_id,
        events=tuple(events),
    )


def record_message_events(tracer: trace.Tracer, instance: Instance, received: MessageEventsReceived) -> None:
    """One span per event, named `<channel>.<kind>` (e.g. `whatsapp.receipt`), carrying what the trace shows."""
    channel = instance.channel.value
    for event in received.events:
        with tracer.start_as_current_span(f"{channel}.{event.kind}") as span:
            span.set_attribute(attrs.INSTANCE_NAME, instance.name)
            span.set_attribute(attrs.SOURCE_CHANNEL, channel)
            span.set_attribute(attrs.REFERS_TO_CHANNEL_MESSAGE_ID, event.channel_message_id)
            span.set_attribute(attrs.MESSAGE_EVENT_KEY, event.key)
            span.set_attribute(attrs.MESSAGE_EVENT_FROM_ME, event.from_me)
            span.set_attribute("omni.event", received.event)
            if event.chat_id:
                span.set_attribute(CHAT_ID_ATTRIBUTE, event.chat_id)
            if event.status:
                span.set_attribute(attrs.RECEIPT_STATUS, event.status)
            if event.kind == MESSAGE_EDITED:
                span.set_attribute(attrs.MESSAGE_EVENT_TEXT, payload_json({"text": event.text}))
