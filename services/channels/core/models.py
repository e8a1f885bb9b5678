"""Domain values of the outbox: what a part is, where it stands, and a connection state."""

from __future__ import annotations

import enum
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from servicekit.database import Row
from servicekit.messages import ContactCard, Location, Media, Reaction


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
    """One message of a reply as the outbox stores it: text, media with `text` as its caption, a reaction, a
    location or contact cards, plus where it answers (the message it quotes, only ever on the first part; the
    thread)."""

    text: str = ""
    media: Media | None = None
    quoted_message_id: str = ""
    thread_id: str = ""
    reaction: Reaction | None = None
    location: Location | None = None
    contacts: tuple[ContactCard, ...] = ()

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "text": self.text,
            "media": asdict(self.media) if self.media else None,
            "quoted_message_id": self.quoted_message_id,
            "thread_id": self.thread_id,
        }
        # The structured kinds only when set: the JSON (and the body hash taken of it) of a text or media part stays
        # what it was before they existed, so a retry across an upgrade is not refused as a reused key.
        if self.reaction is not None:
            data["reaction"] = asdict(self.reaction)
        if self.location is not None:
            data["location"] = asdict(self.location)
        if self.contacts:
            data["contacts"] = [asdict(card) for card in self.contacts]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OutboundPart:
        media = data.get("media")
        reaction = data.get("reaction")
        location = data.get("location")
        contacts = data.get("contacts")
        return cls(
            text=str(data.get("text", "")),
            media=Media.from_dict(media) if isinstance(media, dict) else None,
            quoted_message_id=str(data.get("quoted_message_id", "")),
            thread_id=str(data.get("thread_id", "")),
            reaction=Reaction(**reaction) if isinstance(reaction, dict) else None,
            location=Location(**location) if isinstance(location, dict) else None,
            contacts=tuple(ContactCard(**card) for card in contacts if isinstance(card, dict))
            if isinstance(contacts, list)
            else (),
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


@dataclass(frozen=True)
class OutboxRow:
    """One stored part."""

    idempotency_key: str
    part_index: int
    instance_name: str
    chat_id: str
    part: OutboundPart
    state: PartState
    channel_message_id: str
    attempts: int
    last_error: str
    error_reason: str
    sending_started_at: float | None
    sending_owner: str
    body_hash: str = ""
    """Hash of the whole message (chat and every part) the key was first used for; "" for rows stored before."""

    @classmethod
    def from_row(cls, row: Row) -> OutboxRow:
        started = row["sending_started_at"]
        return cls(
            idempotency_key=row["idempotency_key"],
            part_index=int(row["part_index"]),
            instance_name=row["instance_name"],
            chat_id=row["chat_id"],
            part=OutboundPart.from_json(json.loads(row["payload"])),
            state=PartState(row["state"]),
            channel_message_id=row["channel_message_id"] or "",
            attempts=int(row["attempts"]),
            last_error=row["last_error"] or "",
            error_reason=row["error_reason"] or "",
            sending_started_at=float(started) if started is not None else None,
            sending_owner=row["sending_owner"] or "",
            body_hash=row["body_hash"] or "",
        )
