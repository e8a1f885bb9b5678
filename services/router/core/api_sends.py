"""SendText and SendMedia: messages an API caller writes, sent through the channels service.

Each send is its own message trace (a new root span, not a child of the caller's gRPC span), so it shows up in the
trace list with its own status and the caller can look it up by the returned trace id.
"""

from __future__ import annotations

import uuid

from opentelemetry import context, trace

from servicekit import trace_attributes as attrs
from servicekit.errors import FieldViolation, InvalidArgumentError, NotFoundError, OmniError
from servicekit.instances import Instance
from servicekit.messages import Media, OutboundPart
from servicekit.telemetry import payload_json
from services.router.core.models import OutgoingMessage, SendResult
from services.router.core.ports import ChannelSender, InstanceStore
from services.router.core.recipients import normalize_recipient
from services.router.core.reply_splitter import split_reply


def scoped_key(instance: Instance, idempotency_key: str) -> str:
    """The outbox key of an API send: the caller's `Idempotency-Key` scoped by the instance's immutable id, so two
    tenants using the same key never share a send, and a deleted-and-recreated instance of the same name starts
    clean. Without a key, a fresh one (every call is then a new message)."""
    if not idempotency_key:
        return str(uuid.uuid4())
    return f"api:{instance.id or instance.name}:{idempotency_key}"


class ApiSender:
    """Sends API-written texts and files."""

    def __init__(
        self, *, instances: InstanceStore, channels: ChannelSender, tracer: trace.Tracer | None = None
    ) -> None:
        self._instances = instances
        self._channels = channels
        self._tracer = tracer or trace.get_tracer("omni.router")

    async def _instance(self, name: str) -> Instance:
        instance = await self._instances.get(name)
        if instance is None:
            raise NotFoundError(f"instance {name!r} not found", reason="INSTANCE_NOT_FOUND")
        return instance

    async def send_text(
        self, instance_name: str, recipient: str, text: str, *, session_id: str = "", idempotency_key: str = ""
    ) -> SendResult:
        if not text.strip():
            raise InvalidArgumentError("text is empty", violations=[FieldViolation("text", "must not be empty")])
        instance = await self._instance(instance_name)
        chat_id = normalize_recipient(recipient, instance.channel)
        texts = split_reply(text, limit=instance.traits.text_limit, auto_split=instance.enable_auto_split)
        outgoing = OutgoingMessage(
            instance_name=instance.name,
            chat_id=chat_id,
            parts=tuple(OutboundPart(text=t) for t in texts),
            idempotency_key=scoped_key(instance, idempotency_key),
        )
        return await self._send("api.send_text", outgoing, session_id)

    async def send_media(
        self, instance_name: str, recipient: str, media: Media, *, session_id: str = "", idempotency_key: str = ""
    ) -> SendResult:
        if not media.url and not media.base64:
            raise InvalidArgumentError(
                "media has no content",
                violations=[FieldViolation("media", "give media.url or media.base64")],
            )
        instance = await self._instance(instance_name)
        chat_id = normalize_recipient(recipient, instance.channel)
        outgoing = OutgoingMessage(
            instance_name=instance.name,
            chat_id=chat_id,
            parts=(OutboundPart(text=media.caption, media=media),),
            idempotency_key=scoped_key(instance, idempotency_key),
        )
        return await self._send("api.send_media", outgoing, session_id)

    async def _send(self, span_name: str, outgoing: OutgoingMessage, session_id: str) -> SendResult:
        # An empty Context makes this span the root of a new trace.
        with self._tracer.start_as_current_span(span_name, context=context.Context()) as span:
            trace_id = format(span.get_span_context().trace_id, "032x")
            span.set_attribute(attrs.INSTANCE_NAME, outgoing.instance_name)
            span.set_attribute(attrs.SOURCE_CHANNEL, "api")
            if session_id:
                span.set_attribute(attrs.SESSION_ID, session_id)
            span.set_attribute(attrs.PAYLOAD_OUTGOING, payload_json(outgoing.snapshot()))
            try:
                sent = await self._channels.send(outgoing)
            except OmniError as exc:
                span.set_attribute(attrs.STATUS, attrs.STATUS_ERROR)
                span.set_attribute(attrs.ERROR_MESSAGE, exc.message)
                raise
            span.set_attribute(attrs.STATUS, attrs.STATUS_SENT)
            return SendResult(tuple(sent), trace_id)
