"""Domain values of the outbox: what a part is, where it stands, and a connection state."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any

from servicekit.messages import Media


class PartState(enum.StrEnum):
    """Where one outbound part is; stored as text in the outbox."""

    PENDING = "pending"
    """Not tried yet, or the last try failed transiently before the request could have been accepted."""
    SENDING = "sending"
    """A request left and its outcome was not recorded: looked up on the channel before any resend."""
    SENT = "sent"
    FAILED = "failed"


class ConnectionState(enum.StrEnum):
    """An instance's channel connection as the hub reports it."""

    CONNECTED = "connected"
    CONNECTING = "connecting"
    DISCONNECTED = "disconnected"
    ERROR = "error"


@dataclass(frozen=True)
class OutboundPart:
    """One message of a reply as the outbox stores it: text, or media with `text` as its caption, plus where it
    answers (the message it quotes, only ever on the first part; the thread)."""

    text: str = ""
    media: Media | None = None
    quoted_message_id: str = ""
    thread_id: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "media": asdict(self.media) if self.media else None,
            "quoted_message_id": self.quoted_message_id,
            "thread_id": self.thread_id,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OutboundPart:
        media = data.get("media")
        return cls(
            text=str(data.get("text", "")),
            media=Media.from_dict(media) if isinstance(media, dict) else None,
            quoted_message_id=str(data.get("quoted_message_id", "")),
            thread_id=str(data.get("thread_id", "")),
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
    workspaces: tuple[tuple[str, str], ...] = ()
    """(id, name) of the guilds (teams) the account is in."""
    latency_ms: float = 0.0
    account_id: str = ""
    account_name: str = ""


@dataclass(frozen=True)
class SendRequest:
    """One reply (or API send) to one chat, already converted from the wire."""

    instance_name: str
    chat_id: str
    idempotency_key: str
    parts: list[OutboundPart] = field(default_factory=list)
    quoted_message_id: str = ""
    thread_id: str = ""
