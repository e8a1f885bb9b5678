"""The canonical message every service shares: one definition, mirroring `omni.common.v1.InboundMessage`.

Cores work on these frozen dataclasses rather than on protobuf so they can be tested without wire types;
`servicekit.message_proto` is the one converter to and from the proto. The inbox stores a message as the JSON of
`message_to_json`, readable with any SQL client.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

from servicekit.channels import Channel

MESSAGE_TYPES = ("text", "image", "audio", "video", "document", "sticker", "location", "contact", "reaction")
"""The values of `InboundMessage.message_type` and `Media.type` (plus "" for unknown), named like the proto enum."""

MEDIA_TYPES = frozenset({"image", "audio", "video", "document", "sticker"})
"""The message types that are files."""

OUTCOMES = ("sent", "error", "blocked", "ignored")
"""The values of a routing outcome (plus "" for unspecified), named like the proto enum."""


@dataclass(frozen=True)
class Sender:
    """The author of a message: channel-native id, and the other identity when the channel gives two."""

    id: str = ""
    display_name: str = ""
    phone_number: str = ""
    alt_id: str = ""
    is_bot: bool = False


@dataclass(frozen=True)
class Media:
    """One file, inbound or outbound. `url` may be a channel's encrypted or expiring URL when nothing better was
    delivered; `base64` is raw (no `data:` prefix) when the channel inlined the bytes."""

    type: str = ""
    """image, audio, video, document or sticker; empty means "guess from the MIME type"."""
    mime_type: str = ""
    url: str = ""
    base64: str = ""
    caption: str = ""
    filename: str = ""
    size_bytes: int = 0
    duration_seconds: int = 0
    blob_id: str = ""
    """The hub's stored copy of the bytes (ingress's media store) when they were moved out of the message, so large
    files never sit in the inbox rows; `base64` is then empty until the router resolves it."""
    voice_note: bool = False
    """A recorded voice message (WhatsApp ptt) rather than an audio file."""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Media:
        """The media of a stored JSON object (older outbox rows spell `type` as `kind`)."""
        return cls(
            type=str(data.get("type", data.get("kind", "")) or ""),
            mime_type=str(data.get("mime_type", "") or ""),
            url=str(data.get("url", "") or ""),
            base64=str(data.get("base64", "") or ""),
            caption=str(data.get("caption", "") or ""),
            filename=str(data.get("filename", "") or ""),
            size_bytes=int(data.get("size_bytes", 0) or 0),
            duration_seconds=int(data.get("duration_seconds", 0) or 0),
            blob_id=str(data.get("blob_id", "") or ""),
            voice_note=bool(data.get("voice_note", False)),
        )


def raw_base64(data: str) -> str:
    """`data` without a `data:<mime>;base64,` prefix: channels want the raw base64 a caller may have wrapped."""
    if data.startswith("data:") and "," in data:
        return data.split(",", 1)[1]
    return data


@dataclass(frozen=True)
class QuotedMessage:
    """The message a reply refers to."""

    channel_message_id: str
    sender_id: str = ""
    text: str = ""


@dataclass(frozen=True)
class InboundMessage:
    """One message received on a channel, in the hub's canonical form."""

    channel_message_id: str
    chat_id: str
    """Where a reply goes: a WhatsApp JID (the group's for a group), a Discord or Slack channel id."""
    sender: Sender
    id: str = ""
    """The hub's id, assigned by ingress when the message is first stored."""
    instance_name: str = ""
    channel: Channel = Channel.WHATSAPP
    message_type: str = ""
    text: str = ""
    media: tuple[Media, ...] = field(default=())
    quoted: QuotedMessage | None = None
    is_group: bool = False
    sent_at: float = 0.0
    """Channel timestamp, epoch seconds (0 when unknown)."""
    received_at: float = 0.0
    """When the hub first stored it, epoch seconds."""
    thread_id: str = ""
    """The channel's thread (Discord thread channel, Slack thread_ts), when any."""
    raw_event: str = ""
    """The event name as the channel spelled it ("messages.upsert", "MESSAGE_CREATE")."""
    context: dict[str, str] = field(default_factory=dict)
    """Channel-specific ids the agent's `context` carries (Discord guild_id, Slack team_id)."""


@dataclass(frozen=True)
class Reaction:
    """An emoji reaction to a message of the chat; an empty emoji removes an earlier one."""

    message_id: str
    emoji: str = ""
    from_me: bool = False
    """The message reacted to was sent by the instance itself (WhatsApp keys a message by its author's side)."""


@dataclass(frozen=True)
class Location:
    """A map pin; name and address are optional labels."""

    latitude: float
    longitude: float
    name: str = ""
    address: str = ""


@dataclass(frozen=True)
class ContactCard:
    """A person's card (a vCard on WhatsApp)."""

    full_name: str
    phone_number: str
    email: str = ""
    organization: str = ""


@dataclass(frozen=True)
class Profile:
    """A person's public profile on a channel, as far as the channel shares it."""

    id: str = ""
    name: str = ""
    phone_number: str = ""
    status: str = ""
    picture_url: str = ""
    is_business: bool = False
    description: str = ""


@dataclass(frozen=True)
class OutboundPart:
    """One message to send: text, media with `text` as its caption, a reaction, a location or contact cards (at
    most one of the structured kinds is set)."""

    text: str = ""
    media: Media | None = None
    reaction: Reaction | None = None
    location: Location | None = None
    contacts: tuple[ContactCard, ...] = ()


def message_to_dict(message: InboundMessage) -> dict[str, Any]:
    """A JSON-ready dict of the message."""
    return asdict(message)


def message_to_json(message: InboundMessage) -> str:
    """The JSON the inbox stores."""
    return orjson.dumps(message).decode()


def message_from_json(text: str | bytes) -> InboundMessage:
    """The message stored as `message_to_json`; raises ValueError when the JSON does not have that shape."""
    raw = orjson.loads(text)
    if not isinstance(raw, dict):
        raise ValueError("stored message is not a JSON object")
    try:
        sender = Sender(**raw.pop("sender"))
        media = tuple(Media(**m) for m in raw.pop("media", ()))
        quoted_raw = raw.pop("quoted", None)
        quoted = QuotedMessage(**quoted_raw) if quoted_raw else None
        channel = Channel(raw.pop("channel", Channel.WHATSAPP))
        return InboundMessage(sender=sender, media=media, quoted=quoted, channel=channel, **raw)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"stored message has an unexpected shape: {exc}") from exc
