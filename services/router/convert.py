"""Proto ↔ domain conversions for the router's RPCs (the only place both sides meet)."""

from __future__ import annotations

import dataclasses

from google.protobuf import timestamp_pb2
from omni.common.v1 import channel_pb2, message_pb2
from omni.router.v1 import instance_pb2

from services.router.core.models import (
    SECRET_FIELDS,
    InboundMessage,
    Instance,
    InstanceChange,
    MediaItem,
    Quoted,
    Sender,
)

CHANNEL_NAMES: dict[int, str] = {
    channel_pb2.CHANNEL_WHATSAPP: "whatsapp",
    channel_pb2.CHANNEL_DISCORD: "discord",
    channel_pb2.CHANNEL_SLACK: "slack",
}
CHANNEL_VALUES: dict[str, int] = {name: value for value, name in CHANNEL_NAMES.items()}

OUTCOME_VALUES: dict[str, int] = {
    "sent": channel_pb2.MESSAGE_OUTCOME_SENT,
    "error": channel_pb2.MESSAGE_OUTCOME_ERROR,
    "blocked": channel_pb2.MESSAGE_OUTCOME_BLOCKED,
    "ignored": channel_pb2.MESSAGE_OUTCOME_IGNORED,
}

CHANGE_KINDS: dict[str, int] = {
    "snapshot": instance_pb2.INSTANCE_CHANGE_KIND_SNAPSHOT,
    "snapshot_done": instance_pb2.INSTANCE_CHANGE_KIND_SNAPSHOT_DONE,
    "upserted": instance_pb2.INSTANCE_CHANGE_KIND_UPSERTED,
    "deleted": instance_pb2.INSTANCE_CHANGE_KIND_DELETED,
}

_PLAIN_FIELDS = [
    f.name
    for f in dataclasses.fields(Instance)
    if f.name not in (*SECRET_FIELDS, "channel", "created_at", "updated_at")
]


def channel_name(value: int) -> str:
    """ "whatsapp", "discord", "slack", or "" for unspecified."""
    return CHANNEL_NAMES.get(value, "")


def message_type_name(value: int) -> str:
    """ "text", "image", ...; an unspecified type is treated as text."""
    if value == channel_pb2.MESSAGE_TYPE_UNSPECIFIED:
        return "text"
    return channel_pb2.MessageType.Name(value).removeprefix("MESSAGE_TYPE_").lower()  # type: ignore[arg-type]


def message_type_value(name: str) -> int:
    key = f"MESSAGE_TYPE_{name.upper()}"
    try:
        return channel_pb2.MessageType.Value(key)
    except ValueError:
        return channel_pb2.MESSAGE_TYPE_UNSPECIFIED


def hint(secret: str) -> str:
    """ "****" plus the last four characters, only when that leaves most of the secret hidden."""
    return "****" + secret[-4:] if len(secret) >= 8 else "****"


def _timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def instance_to_proto(instance: Instance, *, with_secrets: bool) -> instance_pb2.Instance:
    """The wire form; secrets as is_set + hint, plus the clear value only `with_secrets`."""
    msg = instance_pb2.Instance(channel=CHANNEL_VALUES.get(instance.channel, 0))  # type: ignore[arg-type]
    for name in _PLAIN_FIELDS:
        setattr(msg, name, getattr(instance, name))
    for name in SECRET_FIELDS:
        value: str = getattr(instance, name)
        target = getattr(msg, name)
        target.is_set = bool(value)
        target.hint = hint(value) if value else ""
        if with_secrets:
            target.value = value
    msg.created_at.CopyFrom(_timestamp(instance.created_at))
    msg.updated_at.CopyFrom(_timestamp(instance.updated_at))
    return msg


def instance_from_proto(msg: instance_pb2.Instance) -> Instance:
    """The domain instance a write carries (secrets from SecretValue.value)."""
    values = {name: getattr(msg, name) for name in _PLAIN_FIELDS}
    values.update({name: getattr(msg, name).value for name in SECRET_FIELDS})
    return Instance(channel=channel_name(msg.channel), **values)


def change_to_proto(change: InstanceChange) -> tuple[int, instance_pb2.Instance | None]:
    """The kind and instance of a watch event (secrets included: watchers talk to channels and agents)."""
    kind = CHANGE_KINDS[change.kind]
    if change.instance is not None:
        return kind, instance_to_proto(change.instance, with_secrets=True)
    if change.name:
        return kind, instance_pb2.Instance(name=change.name)
    return kind, None


def media_from_proto(msg: message_pb2.Media) -> MediaItem:
    return MediaItem(
        type=message_type_name(msg.type) if msg.type else "",
        mime_type=msg.mime_type,
        url=msg.url,
        base64=msg.base64,
        caption=msg.caption,
        filename=msg.filename,
        size_bytes=msg.size_bytes,
        duration_seconds=msg.duration_seconds,
    )


def media_to_proto(item: MediaItem) -> message_pb2.Media:
    return message_pb2.Media(
        type=message_type_value(item.type),  # type: ignore[arg-type]
        mime_type=item.mime_type,
        url=item.url,
        base64=item.base64,
        caption=item.caption,
        filename=item.filename,
        size_bytes=item.size_bytes,
        duration_seconds=item.duration_seconds,
    )


def inbound_from_proto(msg: message_pb2.InboundMessage) -> InboundMessage:
    return InboundMessage(
        id=msg.id,
        instance_name=msg.instance_name,
        channel=channel_name(msg.channel),
        chat_id=msg.chat_id,
        sender=Sender(
            id=msg.sender.id,
            display_name=msg.sender.display_name,
            phone_number=msg.sender.phone_number,
            alt_id=msg.sender.alt_id,
            is_bot=msg.sender.is_bot,
        ),
        channel_message_id=msg.channel_message_id,
        message_type=message_type_name(msg.message_type),
        text=msg.text,
        media=tuple(media_from_proto(m) for m in msg.media),
        quoted=(
            Quoted(msg.quoted.channel_message_id, msg.quoted.sender_id, msg.quoted.text)
            if msg.HasField("quoted")
            else None
        ),
        is_group=msg.is_group,
        thread_id=msg.thread_id,
    )
