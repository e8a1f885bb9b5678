"""The canonical inbound message as plain frozen dataclasses.

The core works on these instead of protobuf messages so the parser and the inbox can be tested without any
wire types; `services.ingress.convert` maps them to and from `omni.common.v1.InboundMessage`. The inbox stores
a message as the JSON of `message_to_dict`, readable with any SQL client.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

MESSAGE_TYPES = ("text", "image", "audio", "video", "document", "sticker", "location", "contact", "reaction")
"""The values of `InboundMessage.message_type` (plus "" for unknown), named like the proto enum."""

OUTCOMES = ("sent", "error", "blocked", "ignored")
"""The values of a router outcome (plus "" for unspecified), named like the proto enum."""


@dataclass(frozen=True)
class Sender:
    """The author of a message: channel-native id, and the other identity when the channel gives two."""

    id: str
    display_name: str = ""
    phone_number: str = ""
    alt_id: str = ""
    is_bot: bool = False


@dataclass(frozen=True)
class Media:
    """One attached file; `url` may be WhatsApp's encrypted URL when nothing better was delivered."""

    type: str
    mime_type: str = ""
    url: str = ""
    base64: str = ""
    caption: str = ""
    filename: str = ""
    size_bytes: int = 0
    duration_seconds: int = 0


@dataclass(frozen=True)
class QuotedMessage:
    """The message a reply refers to."""

    channel_message_id: str
    sender_id: str = ""
    text: str = ""


@dataclass(frozen=True)
class InboundMessage:
    """One message received on a channel, in the hub's canonical form (mirrors omni.common.v1.InboundMessage)."""

    channel_message_id: str
    chat_id: str
    sender: Sender
    id: str = ""
    instance_name: str = ""
    channel: str = "whatsapp"
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
    raw_event: str = ""


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
        return InboundMessage(sender=sender, media=media, quoted=quoted, **raw)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"stored message has an unexpected shape: {exc}") from exc
