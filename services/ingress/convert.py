"""Proto ↔ domain conversions for the ingress servicer and the router adapter (the core never sees protobuf)."""

from __future__ import annotations

from google.protobuf import timestamp_pb2
from omni.common.v1 import channel_pb2, message_pb2
from omni.ingress.v1 import inbox_pb2

from services.ingress.core.accept import DeadLetter
from services.ingress.core.model import InboundMessage, Media, QuotedMessage, Sender

CHANNELS: dict[channel_pb2.Channel.ValueType, str] = {
    channel_pb2.CHANNEL_WHATSAPP: "whatsapp",
    channel_pb2.CHANNEL_DISCORD: "discord",
    channel_pb2.CHANNEL_SLACK: "slack",
}
CHANNEL_ENUMS = {name: value for value, name in CHANNELS.items()}

MESSAGE_TYPES: dict[str, channel_pb2.MessageType.ValueType] = {
    "text": channel_pb2.MESSAGE_TYPE_TEXT,
    "image": channel_pb2.MESSAGE_TYPE_IMAGE,
    "audio": channel_pb2.MESSAGE_TYPE_AUDIO,
    "video": channel_pb2.MESSAGE_TYPE_VIDEO,
    "document": channel_pb2.MESSAGE_TYPE_DOCUMENT,
    "sticker": channel_pb2.MESSAGE_TYPE_STICKER,
    "location": channel_pb2.MESSAGE_TYPE_LOCATION,
    "contact": channel_pb2.MESSAGE_TYPE_CONTACT,
    "reaction": channel_pb2.MESSAGE_TYPE_REACTION,
}
MESSAGE_TYPE_NAMES = {value: name for name, value in MESSAGE_TYPES.items()}

OUTCOMES: dict[int, str] = {
    channel_pb2.MESSAGE_OUTCOME_SENT: "sent",
    channel_pb2.MESSAGE_OUTCOME_ERROR: "error",
    channel_pb2.MESSAGE_OUTCOME_BLOCKED: "blocked",
    channel_pb2.MESSAGE_OUTCOME_IGNORED: "ignored",
}


def channel_name(value: channel_pb2.Channel.ValueType) -> str:
    """ "whatsapp", "discord", "slack", or "" for CHANNEL_UNSPECIFIED."""
    return CHANNELS.get(value, "")


def timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def _seconds(ts: timestamp_pb2.Timestamp) -> float:
    return ts.seconds + ts.nanos / 1e9


def message_to_proto(message: InboundMessage) -> message_pb2.InboundMessage:
    proto = message_pb2.InboundMessage(
        id=message.id,
        instance_name=message.instance_name,
        channel=CHANNEL_ENUMS.get(message.channel, channel_pb2.CHANNEL_UNSPECIFIED),
        channel_message_id=message.channel_message_id,
        chat_id=message.chat_id,
        sender=message_pb2.Sender(
            id=message.sender.id,
            display_name=message.sender.display_name,
            phone_number=message.sender.phone_number,
            alt_id=message.sender.alt_id,
            is_bot=message.sender.is_bot,
        ),
        message_type=MESSAGE_TYPES.get(message.message_type, channel_pb2.MESSAGE_TYPE_UNSPECIFIED),
        text=message.text,
        media=[
            message_pb2.Media(
                type=MESSAGE_TYPES.get(m.type, channel_pb2.MESSAGE_TYPE_UNSPECIFIED),
                mime_type=m.mime_type,
                url=m.url,
                base64=m.base64,
                caption=m.caption,
                filename=m.filename,
                size_bytes=m.size_bytes,
                duration_seconds=m.duration_seconds,
            )
            for m in message.media
        ],
        is_group=message.is_group,
        thread_id=message.thread_id,
        raw_event=message.raw_event,
    )
    if message.quoted is not None:
        proto.quoted.CopyFrom(
            message_pb2.QuotedMessage(
                channel_message_id=message.quoted.channel_message_id,
                sender_id=message.quoted.sender_id,
                text=message.quoted.text,
            )
        )
    if message.sent_at:
        proto.sent_at.CopyFrom(timestamp(message.sent_at))
    if message.received_at:
        proto.received_at.CopyFrom(timestamp(message.received_at))
    return proto


def message_from_proto(proto: message_pb2.InboundMessage) -> InboundMessage:
    return InboundMessage(
        id=proto.id,
        instance_name=proto.instance_name,
        channel=channel_name(proto.channel),
        channel_message_id=proto.channel_message_id,
        chat_id=proto.chat_id,
        sender=Sender(
            id=proto.sender.id,
            display_name=proto.sender.display_name,
            phone_number=proto.sender.phone_number,
            alt_id=proto.sender.alt_id,
            is_bot=proto.sender.is_bot,
        ),
        message_type=MESSAGE_TYPE_NAMES.get(proto.message_type, ""),
        text=proto.text,
        media=tuple(
            Media(
                type=MESSAGE_TYPE_NAMES.get(m.type, ""),
                mime_type=m.mime_type,
                url=m.url,
                base64=m.base64,
                caption=m.caption,
                filename=m.filename,
                size_bytes=m.size_bytes,
                duration_seconds=m.duration_seconds,
            )
            for m in proto.media
        ),
        quoted=(
            QuotedMessage(
                channel_message_id=proto.quoted.channel_message_id,
                sender_id=proto.quoted.sender_id,
                text=proto.quoted.text,
            )
            if proto.HasField("quoted")
            else None
        ),
        is_group=proto.is_group,
        sent_at=_seconds(proto.sent_at) if proto.HasField("sent_at") else 0.0,
        received_at=_seconds(proto.received_at) if proto.HasField("received_at") else 0.0,
        thread_id=proto.thread_id,
        raw_event=proto.raw_event,
    )


def dead_letter_to_proto(letter: DeadLetter) -> inbox_pb2.DeadLetter:
    return inbox_pb2.DeadLetter(
        id=letter.id,
        message=message_to_proto(letter.message),
        attempts=letter.attempts,
        last_error=letter.last_error,
        dead_at=timestamp(letter.dead_at),
        trace_id=letter.trace_id,
    )
