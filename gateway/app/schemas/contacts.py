"""The unified Omni API's contact list: the people an instance's account can message."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ContactOut(BaseModel):
    """One person; `id` is a send-text recipient (a Slack user id opens a DM)."""

    id: str
    name: str
    phone_number: str | None = None
    avatar_url: str | None = None
    email: str | None = None


class ContactList(BaseModel):
    """One page of contacts, ordered by name."""

    contacts: list[ContactOut]
    page: int
    page_size: int
    total_count: int
    has_more: bool = Field(description="True when a later page holds more contacts.")
