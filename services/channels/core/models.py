"""Domain values of the outbox: what a part is, where it stands, and a connection state."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class PartState(enum.StrEnum):
    """Where one outbound part is; stored as text in the outbox."""

    PENDING = "pending"
    """Not tried yet, or the last try failed transiently before the request could have been accepted."""
    SENDING = "sending"
    """A request left and its outcome was not recorded: reconciled with Evolution before any resend."""
    SENT = "sent"
    FAILED = "failed"


class ConnectionState(enum.StrEnum):
    """An instance's channel connection as the hub reports it."""

    CONNECTED = "connected"
    CONNECTING = "connecting"
    DISCONNECTED = "disconnected"
    ERROR = "error"


MEDIA_KINDS = frozenset({"image", "video", "audio", "document", "sticker"})


@dataclass(frozen=True)
class MediaSpec:
    """A file to send. `url` or `base64` (raw, no data: prefix) must be set."""

    kind: str = ""
    """image, video, audio, document or sticker; empty means guess from the MIME type."""
    mime_type: str = ""
    url: str = ""
    base64: str = ""
    filename: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "mime_type": self.mime_type,
            "url": self.url,
            "base64": self.base64,
            "filename": self.filename,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MediaSpec:
        return cls(
            kind=str(data.get("kind", "")),
            mime_type=str(data.get("mime_type", "")),
            url=str(data.get("url", "")),
            base64=str(data.get("base64", "")),
            filename=str(data.get("filename", "")),
        )


@dataclass(frozen=True)
class OutboundPart:
    """One message of a reply: text, or media with `text` as its caption."""

    text: str = ""
    media: MediaSpec | None = None
    quoted_message_id: str = ""
    """Channel id of the message this part quotes (only ever set on the first part)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "media": self.media.to_json() if self.media else None,
            "quoted_message_id": self.quoted_message_id,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OutboundPart:
        media = data.get("media")
        return cls(
            text=str(data.get("text", "")),
            media=MediaSpec.from_json(media) if isinstance(media, dict) else None,
            quoted_message_id=str(data.get("quoted_message_id", "")),
        )


@dataclass(frozen=True)
class PartResult:
    """The outcome of one part, as SendMessage reports it."""

    index: int
    state: PartState
    channel_message_id: str = ""
    error: str = ""


@dataclass(frozen=True)
class ConnectionStatus:
    """An instance's connection state, with the login QR when it was asked for and available."""

    state: ConnectionState
    raw_state: str = ""
    qr_code: str = ""
    pairing_code: str = ""
    detail: str = ""


@dataclass(frozen=True)
class SendRequest:
    """One reply (or API send) to one chat, already converted from the wire."""

    instance_name: str
    chat_id: str
    idempotency_key: str
    parts: list[OutboundPart] = field(default_factory=list)
    quoted_message_id: str = ""
    thread_id: str = ""
