"""Domain values of the router beyond the shared ones (`servicekit.instances`, `servicekit.messages`): instance
changes, outgoing replies and the outcomes of RouteMessage and of API sends."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from servicekit.instances import Instance
from servicekit.messages import Media, OutboundPart

INSTANCE_FIELDS: frozenset[str] = frozenset(
    {
        "agent_api_url",
        "agent_api_key",
        "default_agent",
        "agent_timeout_seconds",
        "enable_auto_split",
        "is_active",
        "automagik_instance_id",
        "automagik_instance_name",
        "fallback_text",
        "webhook_secret",
        "webhook_auth",
        "group_reply",
        "transcription_url",
        "transcription_api_key",
        "transcription_model",
        "access_mode",
        "blocked_text",
        "agent_max_attempts",
        "session_id_prefix",
    }
)
"""Top-level FieldMask paths UpdateInstance accepts; channel fields are named "<channel>.<field>"."""


def media_to_agent(media: Media) -> dict[str, Any]:
    """The agent contract's media entry: type and mime_type always, the rest when known."""
    entry: dict[str, Any] = {"type": media.type, "mime_type": media.mime_type}
    for key in ("url", "base64", "caption", "filename"):
        value = getattr(media, key)
        if value:
            entry[key] = value
    if media.size_bytes:
        entry["size_bytes"] = media.size_bytes
    if media.voice_note:
        entry["voice_note"] = True
    return entry


def _part_snapshot(part: OutboundPart) -> dict[str, Any]:
    """One part for the trace: its text and whichever content it carries."""
    snapshot: dict[str, Any] = {"text": part.text}
    if part.media is not None:
        snapshot["media"] = media_to_agent(part.media)
    if part.reaction is not None:
        snapshot["reaction"] = asdict(part.reaction)
    if part.location is not None:
        snapshot["location"] = asdict(part.location)
    if part.contacts:
        snapshot["contacts"] = [asdict(card) for card in part.contacts]
    return snapshot


@dataclass(frozen=True)
class InstanceChange:
    """One event of the instance watch: kind is snapshot, snapshot_done, upserted or deleted."""

    kind: str
    instance: Instance | None = None
    name: str = ""


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
            "quoted_message_id": self.quoted_message_id or None,
            "parts": [_part_snapshot(p) for p in self.parts],
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


@dataclass(frozen=True)
class Person:
    """Who sent a message, as the identity resolver needs it."""

    instance_name: str
    channel: str
    identity: str
    """The preferred identity: the phone JID when known, else the channel id."""
    external_ids: tuple[str, ...]
    """Every id the sender is known by in this message (identity first)."""
    display_name: str = ""
    phone_number: str = ""
    instance_id: str = ""
    """The instance's immutable id: user ids derive from it, so a recreated instance of the same name gets new ones."""


@dataclass(frozen=True)
class RouteRecord:
    """How far RouteMessage got with one inbound message."""

    message_id: str
    instance_name: str
    user_id: str
    session_id: str
    agent_reply: dict[str, Any] | None = None
    """The agent's parsed reply ({"text", "media", "actions", "raw"}) or a permanent failure ({"error"})."""
    outcome: str | None = None
    """sent or error once final; None while in progress."""
    error_message: str = ""
    sent_message_ids: tuple[str, ...] = ()
    attempts: int = 0


@dataclass(frozen=True)
class ApiKey:
    """A key scoped to one instance, without its secret part (only a hash of it is ever stored)."""

    id: str
    instance_name: str
    instance_id: str
    """The id of the instance the key was issued for: a key never reaches a new instance that reuses the name."""
    prefix: str
    """The key's first characters, so an operator can tell keys apart."""
    created_at: float
    last_used_at: float = 0.0
    """When the key last authenticated a request (0: never); written at most once a minute."""


@dataclass(frozen=True)
class ChannelAccount:
    """Whom an instance's credentials belong to, as the channel answered the account check (empty when the
    channel checks nothing)."""

    id: str = ""
    name: str = ""
    workspace_id: str = ""
    workspace_name: str = ""
