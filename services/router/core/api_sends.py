"""The API sends: texts, files (voice notes and stickers included), reactions, locations and contact cards an API
caller writes, sent through the channels service; plus the two one-shot chat actions, presence and profile.

Each send is its own message trace (a new root span, not a child of the caller's gRPC span), so it shows up in the
trace list with its own status and the caller can look it up by the returned trace id. Each is idempotent under the
caller's `Idempotency-Key` (`scoped_key`): the outbox keys every part by it, so a repeat returns the first result.
A presence and a profile read are not messages: no trace of their own, no key, one try.
"""

from __future__ import annotations

import dataclasses
import math
import uuid
from collections.abc import Sequence

from opentelemetry import context, trace

from servicekit import trace_attributes as attrs
from servicekit.errors import FieldViolation, InvalidArgumentError, NotFoundError, OmniError
from servicekit.instances import Instance
from servicekit.messages import ContactCard, Location, Media, OutboundPart, Profile, Reaction
from servicekit.telemetry import payload_json
from services.router.core.models import OutgoingMessage, SendResult
from services.router.core.ports import ChannelSender, InstanceStore
from services.router.core.recipients import is_phone_number, normalize_recipient
from services.router.core.reply_splitter import split_reply

PRESENCES = ("composing", "recording", "paused", "available")
DEFAULT_PRESENCE_MS = 3000
MAX_PRESENCE_MS = 20000
"""Evolution holds a presence request open for its whole duration (20 s slices past that): a cap keeps a REST call
short."""
MAX_CONTACT_CARDS = 50


def scoped_key(instance: Instance, idempotency_key: str) -> str:
    """The outbox key of an API send: the caller's `Idempotency-Key` scoped by the instance's immutable id, so two
    tenants using the same key never share a send, and a deleted-and-recreated instance of the same name starts
    clean. Without a key, a fresh one (every call is then a new message)."""
    if not idempotency_key:
        return str(uuid.uuid4())
    return f"api:{instance.id or instance.name}:{idempotency_key}"


def _invalid(field: str, description: str) -> InvalidArgumentError:
    return InvalidArgumentError(f"invalid {field}", violations=[FieldViolation(field, description)])


def _check_location(location: Location) -> None:
    violations = []
    if not (math.isfinite(location.latitude) and -90 <= location.latitude <= 90):
        violations.append(FieldViolation("location.latitude", "must be between -90 and 90"))
    if not (math.isfinite(location.longitude) and -180 <= location.longitude <= 180):
        violations.append(FieldViolation("location.longitude", "must be between -180 and 180"))
    if violations:
        raise InvalidArgumentError("invalid location", violations=violations)


def _check_contacts(contacts: Sequence[ContactCard]) -> None:
    if not contacts:
        raise _invalid("contacts", "give at least one card")
    if len(contacts) > MAX_CONTACT_CARDS:
        raise _invalid("contacts", f"at most {MAX_CONTACT_CARDS} cards")
    violations = []
    for index, card in enumerate(contacts):
        if not card.full_name.strip():
            violations.append(FieldViolation(f"contacts[{index}].full_name", "required"))
        if not is_phone_number(card.phone_number):
            violations.append(
                FieldViolation(f"contacts[{index}].phone_number", "must be a phone number (+5511999999999 or digits)")
            )
    if violations:
        raise InvalidArgumentError("invalid contacts", violations=violations)


class ApiSender:
    """Sends API-written messages and runs the API's chat actions."""

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
        texts = split_reply(text, limit=instance.traits.text_limit, auto_split=instance.enable_auto_split)
        parts = tuple(OutboundPart(text=t) for t in texts)
        return await self._send("api.send_text", instance, recipient, parts, session_id, idempotency_key)

    async def send_media(
        self, instance_name: str, recipient: str, media: Media, *, session_id: str = "", idempotency_key: str = ""
    ) -> SendResult:
        """A file with an optional caption; `media.voice_note` makes an audio a recorded voice message and the
        sticker type a sticker (each has its own channel call)."""
        if not media.url and not media.base64:
            raise InvalidArgumentError(
                "media has no content",
                violations=[FieldViolation("media", "give media.url or media.base64")],
            )
        if media.voice_note and media.type not in ("", "audio"):
            raise _invalid("media.voice_note", "only an audio can be a voice note")
        if media.voice_note and not media.type:
            media = dataclasses.replace(media, type="audio")
        instance = await self._instance(instance_name)
        span_name = "api.send_audio" if media.voice_note else "api.send_sticker" if media.type == "sticker" else ""
        parts = (OutboundPart(text=media.caption, media=media),)
        return await self._send(span_name or "api.send_media", instance, recipient, parts, session_id, idempotency_key)

    async def send_reaction(
        self, instance_name: str, recipient: str, reaction: Reaction, *, session_id: str = "", idempotency_key: str = ""
    ) -> SendResult:
        """React to `reaction.message_id` in the chat `recipient`; an empty emoji removes the reaction."""
        if not reaction.message_id.strip():
            raise _invalid("reaction.message_id", "required: the id of the message reacted to")
        instance = await self._instance(instance_name)
        parts = (OutboundPart(text=reaction.emoji, reaction=reaction),)
        return await self._send("api.send_reaction", instance, recipient, parts, session_id, idempotency_key)

    async def send_location(
        self, instance_name: str, recipient: str, location: Location, *, session_id: str = "", idempotency_key: str = ""
    ) -> SendResult:
        _check_location(location)
        instance = await self._instance(instance_name)
        parts = (OutboundPart(text=location.name, location=location),)
        return await self._send("api.send_location", instance, recipient, parts, session_id, idempotency_key)

    async def send_contact(
        self,
        instance_name: str,
        recipient: str,
        contacts: Sequence[ContactCard],
        *,
        session_id: str = "",
        idempotency_key: str = "",
    ) -> SendResult:
        """Contact cards, sent as one message."""
        _check_contacts(contacts)
        instance = await self._instance(instance_name)
        parts = (OutboundPart(contacts=tuple(contacts)),)
        return await self._send("api.send_contact", instance, recipient, parts, session_id, idempotency_key)

    async def send_presence(self, instance_name: str, recipient: str, presence: str, duration_ms: int = 0) -> None:
        """Show a presence in the chat for `duration_ms` (default 3 s): one try, the channel's failure raised."""
        if presence not in PRESENCES:
            raise _invalid("presence", "must be composing, recording, paused or available")
        if not 0 <= duration_ms <= MAX_PRESENCE_MS:
            raise _invalid("duration_ms", f"must be between 0 and {MAX_PRESENCE_MS}")
        instance = await self._instance(instance_name)
        chat_id = normalize_recipient(recipient, instance.channel)
        await self._channels.presence(instance.name, chat_id, presence, duration_ms or DEFAULT_PRESENCE_MS)

    async def fetch_profile(self, instance_name: str, recipient: str) -> Profile:
        """The recipient's public profile on the instance's channel."""
        instance = await self._instance(instance_name)
        chat_id = normalize_recipient(recipient, instance.channel)
        return await self._channels.fetch_profile(instance.name, chat_id)

    async def _send(
        self,
        span_name: str,
        instance: Instance,
        recipient: str,
        parts: tuple[OutboundPart, ...],
        session_id: str,
        idempotency_key: str,
    ) -> SendResult:
        outgoing = OutgoingMessage(
            instance_name=instance.name,
            chat_id=normalize_recipient(recipient, instance.channel),
            parts=parts,
            idempotency_key=scoped_key(instance, idempotency_key),
        )
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
                # The reason says whose fault it was (RECIPIENT_NOT_ON_WHATSAPP, EVOLUTION_UNAUTHORIZED, ...).
                span.set_attribute(attrs.ERROR_MESSAGE, f"{exc.reason}: {exc.message}")
                raise
            span.set_attribute(attrs.STATUS, attrs.STATUS_SENT)
            return SendResult(tuple(sent), trace_id)
