"""Erasing a person's inbox copies (EraseUser), when an operator deletes a user (the router's DeleteUser).

The inbox keeps each message as canonical JSON, without a sender column; the rows of the person's chats are read and
only those sent under one of their ids are deleted (with their stored files), so in a group the other members'
messages stay.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from servicekit.errors import FieldViolation, InvalidArgumentError
from servicekit.messages import message_from_json


class ChatRows(Protocol):
    """The inbox store as erasure needs it (storage.InboxStore)."""

    async def rows_in_chats(self, instance_name: str, chat_ids: Sequence[str]) -> list[tuple[str, str]]: ...

    async def erase_rows(self, instance_name: str, ids: Sequence[str]) -> int: ...


async def erase_user(store: ChatRows, instance_name: str, chat_ids: Sequence[str], sender_ids: Sequence[str]) -> int:
    """Delete the person's rows in those chats of the instance; returns how many. Idempotent."""
    if not instance_name:
        raise InvalidArgumentError(
            "instance_name is required", violations=[FieldViolation("instance_name", "required")]
        )
    senders = {s for s in sender_ids if s}
    if not senders:
        return 0
    chats = [c for c in dict.fromkeys(chat_ids) if c] or list(senders)
    theirs = [
        row_id
        for row_id, text in await store.rows_in_chats(instance_name, chats)
        if senders & {(m := message_from_json(text)).sender.id, m.sender.alt_id}
    ]
    return await store.erase_rows(instance_name, theirs) if theirs else 0
