"""The one converter between the shared domain values and their protos (servicers and gRPC adapters only).

Cores never see protobuf; every service maps the canonical message, media, channels and instances through here, so
a field added to a proto is mapped once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from google.protobuf import timestamp_pb2
from omni.common.v1 import channel_pb2, message_pb2
from omni.router.v1 import instance_pb2

from servicekit.channels import Channel
from servicekit.instances import (
    CONFIG_TYPES,
    INSTANCE_SECRETS,
    WEBHOOK_AUTH_NONE,
    WEBHOOK_AUTH_SECRET,
    Instance,
    config_values,
)
from servicekit.messages import ContactCard, InboundMessage, Location, Media, Profile, QuotedMessage, Reaction, Sender

CHANNEL_VALUES: dict[Channel, channel_pb2.Channel.ValueType] = {
    Channel.WHATSAPP: channel_pb2.CHANNEL_WHATSAPP,
    Channel.DISCORD: channel_pb2.CHANNEL_DISCORD,
    Channel.SLACK: channel_pb2.CHANNEL_SLACK,
}
CHANNELS: dict[int, Channel] = {value: channel for channel, value in CHANNEL_VALUES.items()}

MESSAGE_TYPE_VALUES: dict[str, channel_pb2.MessageType.ValueType] = {
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
MESSAGE_TYPES: dict[int, str] = {value: name for name, value in MESSAGE_TYPE_VALUES.items()}

OUTCOME_VALUES: dict[str, channel_pb2.MessageOutcome.ValueType] = {
    "sent": channel_pb2.MESSAGE_OUTCOME_SENT,
    "error": channel_pb2.MESSAGE_OUTCOME_ERROR,
    "blocked": channel_pb2.MESSAGE_OUTCOME_BLOCKED,
    "ignored": channel_pb2.MESSAGE_OUTCOME_IGNORED,
}
OUTCOMES: dict[int, str] = {value: name for name, value in OUTCOME_VALUES.items()}

CONNECTION_STATE_VALUES: dict[str, channel_pb2.ConnectionState.ValueType] = {
    "connected": channel_pb2.CONNECTION_STATE_CONNECTED,
    "connecting": channel_pb2.CONNECTION_STATE_CONNECTING,
    "disconnected": channel_pb2.CONNECTION_STATE_DISCONNECTED,
    "error": channel_pb2.CONNECTION_STATE_ERROR,
}
CONNECTION_STATES: dict[int, str] = {value: name for name, value in CONNECTION_STATE_VALUES.items()}


def channel_of(value: int) -> Channel | None:
    """The channel of a proto enum value; None for CHANNEL_UNSPECIFIED (or a value this build does not know)."""
    return CHANNELS.get(value)


def channel_value(channel: str) -> channel_pb2.Channel.ValueType:
    """The proto enum value of a channel name (CHANNEL_UNSPECIFIED for an unknown one)."""
    try:
        return CHANNEL_VALUES[Channel(channel)]
    except ValueError:
        return channel_pb2.CHANNEL_UNSPECIFIED


def timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def seconds(stamp: timestamp_pb2.Timestamp) -> float:
    return stamp.seconds + stamp.nanos / 1e9


def workspaces_to_proto(workspaces: Iterable[tuple[str, str]]) -> list[message_pb2.Workspace]:
    """The (id, name) pairs of a bot's guilds (or teams) on the wire."""
    return [message_pb2.Workspace(id=workspace_id, name=name) for workspace_id, name in workspaces]


def media_to_proto(media: Media) -> message_pb2.Media:
    return message_pb2.Media(
        type=MESSAGE_TYPE_VALUES.get(media.type, channel_pb2.MESSAGE_TYPE_UNSPECIFIED),
        mime_type=media.mime_type,
        url=media.url,
        base64=media.base64,
        caption=media.caption,
        filename=media.filename,
        size_bytes=media.size_bytes,
        duration_seconds=media.duration_seconds,
        blob_id=media.blob_id,
        voice_note=media.voice_note,
    )


def media_from_proto(proto: message_pb2.Media) -> Media:
    return Media(
        type=MESSAGE_TYPES.get(proto.type, ""),
        mime_type=proto.mime_type,
        url=proto.url,
        base64=proto.base64,
        caption=proto.caption,
        filename=proto.filename,
        size_bytes=proto.size_bytes,
        duration_seconds=proto.duration_seconds,
        blob_id=proto.blob_id,
        voice_note=proto.voice_note,
    )


def reaction_to_proto(reaction: Reaction) -> message_pb2.Reaction:
    return message_pb2.Reaction(message_id=reaction.message_id, emoji=reaction.emoji, from_me=reaction.from_me)


def reaction_from_proto(proto: message_pb2.Reaction) -> Reaction:
    return Reaction(message_id=proto.message_id, emoji=proto.emoji, from_me=proto.from_me)


def location_to_proto(location: Location) -> message_pb2.Location:
    return message_pb2.Location(
        latitude=location.latitude, longitude=location.longitude, name=location.name, address=location.address
    )


def location_from_proto(proto: message_pb2.Location) -> Location:
    return Location(latitude=proto.latitude, longitude=proto.longitude, name=proto.name, address=proto.address)


def contact_card_to_proto(card: ContactCard) -> message_pb2.ContactCard:
    return message_pb2.ContactCard(
        full_name=card.full_name, phone_number=card.phone_number, email=card.email, organization=card.organization
    )


def contact_card_from_proto(proto: message_pb2.ContactCard) -> ContactCard:
    return ContactCard(
        full_name=proto.full_name, phone_number=proto.phone_number, email=proto.email, organization=proto.organization
    )


def profile_to_proto(profile: Profile) -> message_pb2.Profile:
    return message_pb2.Profile(
        id=profile.id,
        name=profile.name,
        phone_number=profile.phone_number,
        status=profile.status,
        picture_url=profile.picture_url,
        is_business=profile.is_business,
        description=profile.description,
    )


def profile_from_proto(proto: message_pb2.Profile) -> Profile:
    return Profile(
        id=proto.id,
        name=proto.name,
        phone_number=proto.phone_number,
        status=proto.status,
        picture_url=proto.picture_url,
        is_business=proto.is_business,
        description=proto.description,
    )


def message_to_proto(message: InboundMessage) -> message_pb2.InboundMessage:
    proto = message_pb2.InboundMessage(
        id=message.id,
        instance_name=message.instance_name,
        channel=channel_value(message.channel),
        channel_message_id=message.channel_message_id,
        chat_id=message.chat_id,
        sender=message_pb2.Sender(
            id=message.sender.id,
            display_name=message.sender.display_name,
            phone_number=message.sender.phone_number,
            alt_id=message.sender.alt_id,
            is_bot=message.sender.is_bot,
        ),
        message_type=MESSAGE_TYPE_VALUES.get(message.message_type, channel_pb2.MESSAGE_TYPE_UNSPECIFIED),
        text=message.text,
        media=[media_to_proto(m) for m in message.media],
        is_group=message.is_group,
        thread_id=message.thread_id,
        raw_event=message.raw_event,
        context=message.context,
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
    """The canonical message; an unspecified channel reads as WhatsApp (the router corrects it from the instance)."""
    return InboundMessage(
        id=proto.id,
        instance_name=proto.instance_name,
        channel=channel_of(proto.channel) or Channel.WHATSAPP,
        channel_message_id=proto.channel_message_id,
        chat_id=proto.chat_id,
        sender=Sender(
            id=proto.sender.id,
            display_name=proto.sender.display_name,
            phone_number=proto.sender.phone_number,
            alt_id=proto.sender.alt_id,
            is_bot=proto.sender.is_bot,
        ),
        message_type=MESSAGE_TYPES.get(proto.message_type, ""),
        text=proto.text,
        media=tuple(media_from_proto(m) for m in proto.media),
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
        sent_at=seconds(proto.sent_at) if proto.HasField("sent_at") else 0.0,
        received_at=seconds(proto.received_at) if proto.HasField("received_at") else 0.0,
        thread_id=proto.thread_id,
        raw_event=proto.raw_event,
        context=dict(proto.context),
    )


@dataclasses.dataclass(frozen=True)
class SecretScope:
    """Which secrets an instance carries in clear on the wire: only those its receiver uses.

    `instance` names instance-level secrets (INSTANCE_SECRETS); `channel` includes the channel config's secrets.
    Every other secret still says `is_set` and its hint.
    """

    instance: frozenset[str] = frozenset()
    channel: bool = False


NO_SECRETS = SecretScope()
ALL_SECRETS = SecretScope(frozenset(INSTANCE_SECRETS), channel=True)


def secret_hint(secret: str) -> str:
    """ "****" plus the last four characters, only when that leaves most of the secret hidden."""
    return "****" + secret[-4:] if len(secret) >= 8 else "****"


def _write_secret(target: instance_pb2.SecretValue, value: str, *, with_secrets: bool) -> None:
    target.is_set = bool(value)
    target.hint = secret_hint(value) if value else ""
    if with_secrets:
        target.value = value


_PLAIN_INSTANCE_FIELDS = tuple(
    f.name
    for f in dataclasses.fields(Instance)
    if f.name
    not in (
        *INSTANCE_SECRETS,
        "name",
        "config",
        "created_at",
        "updated_at",
        "webhook_auth",
        "previous_webhook_secret_expires_at",
    )
)
_WEBHOOK_AUTH_VALUES = {
    WEBHOOK_AUTH_SECRET: instance_pb2.WEBHOOK_AUTH_SECRET,
    WEBHOOK_AUTH_NONE: instance_pb2.WEBHOOK_AUTH_NONE,
}
_WEBHOOK_AUTH_NAMES = {value: name for name, value in _WEBHOOK_AUTH_VALUES.items()}


def instance_to_proto(instance: Instance, *, with_secrets: bool | SecretScope) -> instance_pb2.Instance:
    """The wire form; secrets as is_set + hint, plus the clear value of those `with_secrets` names (True: all)."""
    scope = with_secrets if isinstance(with_secrets, SecretScope) else ALL_SECRETS if with_secrets else NO_SECRETS
    proto = instance_pb2.Instance(name=instance.name, channel=CHANNEL_VALUES[instance.channel])
    for name in _PLAIN_INSTANCE_FIELDS:
        setattr(proto, name, getattr(instance, name))
    for name in INSTANCE_SECRETS:
        _write_secret(getattr(proto, name), getattr(instance, name), with_secrets=name in scope.instance)
    arm = getattr(proto, instance.channel.value)
    arm.SetInParent()
    for name, value in config_values(instance.config).items():
        if name in instance.config.SECRETS:
            _write_secret(getattr(arm, name), value, with_secrets=scope.channel)
        else:
            setattr(arm, name, value)
    if instance.created_at:
        proto.created_at.CopyFrom(timestamp(instance.created_at))
    if instance.updated_at:
        proto.updated_at.CopyFrom(timestamp(instance.updated_at))
    proto.webhook_auth = _WEBHOOK_AUTH_VALUES.get(instance.webhook_auth, instance_pb2.WEBHOOK_AUTH_SECRET)
    if instance.previous_webhook_secret_expires_at:
        proto.previous_webhook_secret_expires_at.CopyFrom(timestamp(instance.previous_webhook_secret_expires_at))
    return proto


def instance_from_proto(proto: instance_pb2.Instance) -> Instance:
    """The instance a proto carries, secrets from `SecretValue.value` (empty in a redacted view).

    The channel comes from the config arm that is set, else from `channel` (a write that sets no channel field);
    an instance with neither reads as WhatsApp, which validation then reports field by field.
    """
    arm = proto.WhichOneof("channel_config")
    channel = Channel(arm) if arm else (channel_of(proto.channel) or Channel.WHATSAPP)
    kind = CONFIG_TYPES[channel]
    config_proto = getattr(proto, channel.value)
    config_fields = {}
    for f in dataclasses.fields(kind):
        value = getattr(config_proto, f.name)
        config_fields[f.name] = value.value if f.name in kind.SECRETS else value
    values = {name: getattr(proto, name) for name in _PLAIN_INSTANCE_FIELDS}
    values.update({name: getattr(proto, name).value for name in INSTANCE_SECRETS})
    return Instance(
        name=proto.name,
        config=kind(**config_fields),
        created_at=seconds(proto.created_at) if proto.HasField("created_at") else 0.0,
        updated_at=seconds(proto.updated_at) if proto.HasField("updated_at") else 0.0,
        webhook_auth=_WEBHOOK_AUTH_NAMES.get(proto.webhook_auth, WEBHOOK_AUTH_SECRET),
        previous_webhook_secret_expires_at=(
            seconds(proto.previous_webhook_secret_expires_at)
            if proto.HasField("previous_webhook_secret_expires_at")
            else 0.0
        ),
        **values,
    )
