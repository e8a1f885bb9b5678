"""What the outbox needs from storage, as a protocol, so the core depends on no SQL (`storage.OutboxStore` is the
implementation; tests use it on SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from services.channels.core.models import OutboundPart, OutboxRow


class OutboxRepository(Protocol):
    """The outbox table as the sender uses it."""

    async def insert_parts(
        self,
        key: str,
        instance_name: str,
        chat_id: str,
        parts: Sequence[OutboundPart],
        now: float,
        *,
        owner: str,
        body_hash: str = "",
    ) -> list[OutboxRow]:
        """Store the parts of `key` not stored yet, in one statement; returns the rows this call inserted."""
        ...

    async def discard_parts(self, key: str, indexes: Sequence[int]) -> None:
        """Delete the named parts of `key`."""
        ...

    async def purge_instance(self, instance_name: str) -> int:
        """Delete every part of the instance; returns how many."""
        ...

    async def parts(self, key: str) -> list[OutboxRow]:
        """Every part of `key`, in order."""
        ...

    async def part(self, key: str, index: int) -> OutboxRow: ...

    async def claim(self, key: str, index: int, *, seen_attempts: int, owner: str, now: float) -> bool:
        """Mark the part `sending` if nobody changed it since it was read; False means someone else did."""
        ...

    async def mark_sent(self, key: str, index: int, channel_message_id: str, now: float) -> None: ...

    async def mark_failed(self, key: str, index: int, *, reason: str, error: str, now: float) -> None: ...

    async def note_unknown(self, key: str, index: int, error: str, now: float) -> None:
        """Keep `sending` (outcome unknown) and remember why, for the reconciliation of the next try."""
        ...

    async def release(self, key: str, index: int, error: str, now: float) -> None:
        """Back to `pending`: the try failed in a way that proves nothing was sent."""
        ...

    async def sent_message_ids(self, instance_name: str, chat_id: str, since: float) -> set[str]:
        """Channel ids already attributed to parts in this chat, so reconciliation never claims one twice."""
        ...
