"""Domain values of the router: instances (clear secrets, never logged), inbound and outbound messages."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

SECRET_FIELDS: tuple[str, ...] = (
    "evolution_key",
    "agent_api_key",
    "discord_bot_token",
    "slack_bot_token",
    "slack_signing_secret",
    "webhook_secret",
)
"""Instance fields stored encrypted and returned only in the WITH_SECRETS view."""

CHANNELS: tuple[str, ...] = ("whatsapp", "discord", "slack")

CHANNEL_TEXT_LIMITS: dict[str, int] = {"whatsapp": 4096, "discord": 2000, "slack": 40000}
"""Longest text part each channel accepts."""


@dataclass(frozen=True)
class Instance:
    """One tenant's channel account and agent. Secrets are in clear: never log or trace this object."""

    name: str
    channel: str
    evolution_url: str = ""
    evolution_key: str = ""
    whatsapp_instance: str = ""
    discord_bot_token: str = ""
    discord_client_id: str = ""
    discord_guild_id: str = ""
    slack_bot_token: str = ""
    slack_signing_secret: str = ""
    agent_api_url: str = ""
    agent_api_key: str = ""
    default_agent: str = ""
    agent_timeout_seconds: int = 60
    enable_auto_split: bool = True
    is_active: bool = True
    automagik_instance_id: str = ""
    automagik_instance_name: str = ""
    fallback_text: str = ""
    webhook_secret: str = ""
    created_at: float = 0.0
    updated_at: float = 0.0

    def __repr__(self) -> str:
        return f"Instance(name={self.name!r}, channel={self.channel!r})"

    @property
    def text_limit(self) -> int:
        """The longest text part this instance's channel accepts."""
        return CHANNEL_TEXT_LIMITS.get(self.channel, 4096)


UPDATABLE_FIELDS: frozenset[str] = frozenset(f.name for f in fields(Instance)) - {"name", "created_at", "updated_at"}
"""FieldMask paths UpdateInstance accepts."""


@dataclass(frozen=True)
class InstanceChange:
    """One event of the instance watch: kind is snapshot, snapshot_done, upserted or deleted."""

    kind: str
    instance: Instance | None = None
    name: str = ""


@dataclass(frozen=True)
class MediaItem:
    """One file, inbound or outbound; `type` is image, audio, video, document or sticker."""

    type: str = ""
    mime_type: str = ""
    url: str = ""
    base64: str = ""
    caption: str = ""
    filename: str = ""
    size_bytes: int = 0
    duration_seconds: int = 0

    def to_agent(self) -> dict[str, Any]:
        """The agent contract's media entry: type and mime_type always, the rest when known."""
        entry: dict[str, Any] = {"type": self.type, "mime_type": self.mime_type}
        for key in ("url", "base64", "caption", "filename"):
            value = getattr(self, key)
            if value:
                entry[key] = value
        return entry


@dataclass(frozen=True)
class Sender:
    """The author of an inbound message."""

    id: str = ""
    display_name: str = ""
    phone_number: str = ""
    alt_id: str = ""
    is_bot: bool = False


@dataclass(frozen=True)
class Quoted:
    """The message an inbound message replies to."""

    channel_message_id: str = ""
    sender_id: str = ""
    text: str = ""


@dataclass(frozen=True)
class InboundMessage:
    """The canonical inbound message as ingress stored it."""

    id: str
    instance_name: str
    channel: str
    chat_id: str
    sender: Sender = field(default_factory=Sender)
    channel_message_id: str = ""
    message_type: str = "text"
    text: str = ""
    media: tuple[MediaItem, ...] = ()
    quoted: Quoted | None = None
    is_group: bool = False
    thread_id: str = ""


@dataclass(frozen=True)
class OutboundPart:
    """One message to send: text, or media with `text` as its caption."""

    text: str = ""
    media: MediaItem | None = None


@dataclass(frozen=True)
class OutgoingMessage:
    """Parts for one chat, sent in order under one idempotency key (channels keys each part by key + index)."""

    instance_name: str
    chat_id: str
    parts: tuple[OutboundPart, ...]
    idempotency_key: str
    thread_id: str = ""
    quoted_message_id: str = ""

    def snapshot(self) -> dict[str, Any]:
        """What was sent, for the trace's outgoing payload."""
        return {
            "instance_name": self.instance_name,
            "chat_id": self.chat_id,
            "idempotency_key": self.idempotency_key,
            "thread_id": self.thread_id or None,
            "parts": [
                {"text": p.text, **({"media": p.media.to_agent()} if p.media is not None else {})} for p in self.parts
            ],
        }


@dataclass(frozen=True)
class RouteResult:
    """The outcome of RouteMessage: outcome is sent, error, blocked or ignored."""

    outcome: str
    error_message: str = ""
    user_id: str = ""
    session_id: str = ""
    sent_message_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class SendResult:
    """The outcome of an API send."""

    message_ids: tuple[str, ...]
    trace_id: str
