"""Scoped API keys as the REST API shows them: the clear key once at creation, then only its prefix."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class ApiKeyOut(BaseModel):
    """A key of one instance, without its secret part."""

    id: str
    prefix: str = Field(description="The key's first characters, to tell keys apart.")
    created_at: datetime | None = None
    last_used_at: datetime | None = Field(default=None, description="Null when never used; updated once a minute.")


class ApiKeyCreated(BaseModel):
    """A new key; `key` is shown in this answer only (Omni keeps only a hash of it)."""

    id: str
    key: str
    prefix: str
    created_at: datetime | None = None


class ApiKeyList(BaseModel):
    """An instance's keys, oldest first."""

    keys: list[ApiKeyOut]
