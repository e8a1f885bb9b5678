"""The unified Omni API's chat list: the conversations of an instance's account (WhatsApp chats, groups, channels)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

ChatType = Literal["direct", "group", "channel"]


class ChatOut(BaseModel):
    """One conversation; `id` (a WhatsApp JID) is a send-text recipient and what `/chats/{id}` takes."""

    id: str
    name: str
    chat_type: ChatType = Field(
        description="From the JID: …@g.us is a group; …@s.whatsapp.net and …@lid are direct; …@newsletter and "
        "…@broadcast are channels."
    )
    unread_count: int = 0
    last_message_at: datetime | None = None
    avatar_url: str | None = None
    last_message_text: str | None = None


class ChatList(BaseModel):
    """One page of chats, in the order the channel created them (new chats come last, so paging is stable)."""

    chats: list[ChatOut]
    page: int
    page_size: int
    total_count: int
    has_more: bool = Field(description="True when a later page holds more chats.")
