"""The inbox's values as the core sees them: the states of a stored message, its row, a stored media file, and a
hosted bot's lease row.

`storage` keeps them in SQL; the core reaches storage only through the protocols of `ports`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from servicekit.database import Row

RECEIVED = "received"
DISPATCHED = "dispatched"
HANDLED = "handled"
DEAD = "dead"
IGNORED = "ignored"
UNFINISHED = (RECEIVED, DISPATCHED)


def conversation_key(instance_name: str, channel: str, chat_id: str) -> str:
    """The ordering scope of a message: one chat of one instance."""
    return f"{instance_name}\x1f{channel}\x1f{chat_id}"


@dataclass(frozen=True)
class InboxRow:
    """One inbox row; `message` is the stored canonical message JSON."""

    id: str
    instance_name: str
    channel: str
    channel_message_id: str
    chat_id: str
    conversation_key: str
    event: str
    message: str
    traceparent: str
    sent_at: float
    received_ns: int
    state: str
    attempts: int
    next_attempt_at: float
    lease_owner: str | None
    lease_until: float | None
    last_error: str
    outcome: str
    dead_at: float | None
    created_at: float
    updated_at: float

    @classmethod
    def from_row(cls, row: Row) -> InboxRow:
        values: dict[str, Any] = {name: row[name] for name in cls.__dataclass_fields__}
        return cls(**values)


@dataclass(frozen=True)
class BotLeaseRow:
    """One hosted bot's lease and last report; `report` and `cursors` are JSON objects."""

    instance_name: str
    channel: str
    owner: str
    lease_until: float
    state: str
    detail: str
    report: str
    cursors: str
    updated_at: float

    @classmethod
    def from_row(cls, row: Row) -> BotLeaseRow:
        values: dict[str, Any] = {name: row[name] for name in cls.__dataclass_fields__}
        return cls(**values)


@dataclass(frozen=True)
class MediaBlob:
    """One stored file (a row of `media_blobs`): the bytes of one media item of one received message, kept apart
    from the inbox row (see `media_store`)."""

    id: str
    instance_name: str
    message_id: str
    channel_message_id: str
    mime_type: str
    size: int
    data: bytes
    created_at: float

    @classmethod
    def from_row(cls, row: Row) -> MediaBlob:
        values: dict[str, Any] = {name: row[name] for name in cls.__dataclass_fields__}
        values["data"] = bytes(values["data"])  # a memoryview on some drivers
        return cls(**values)
