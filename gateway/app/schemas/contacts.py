"""The unified Omni API's contact list: the people an instance's account can message."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ContactOut(BaseModel):
    """One person; `id` is a send-text recipient and what `/contacts/{id}` takes (a WhatsApp JID, a Slack user id,
    which opens a DM). `phone_number` is set for phone-addressed WhatsApp contacts (not for a `@lid`)."""

    id: str
    name: str
    phone_number: str | None = None
    avatar_url: str | None = None
    email: str | None = None


class ContactList(BaseModel):
    """One page of contacts in a stable order: by name on Slack; on WhatsApp in the order Evolution saved them, so a
    contact saved while a client pages lands on the last page and nothing is skipped or repeated."""

    contacts: list[ContactOut]
    page: int
    page_size: int
    total_count: int
    has_more: bool = Field(description="True when a later page holds more contacts.")
