"""Users (people, known under several external ids) and sessions (one per chat) as the REST API shows them."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class ExternalIdOut(BaseModel):
    """One id under which an instance's channel knows the user (WhatsApp phone JID or LID, Discord or Slack id)."""

    instance_name: str
    channel: str
    external_id: str


class SessionOut(BaseModel):
    """One conversation: a chat of an instance, with the ids the agent returned in its last reply."""

    id: str
    instance_name: str
    chat_id: str
    channel: str
    session_name: str
    user_id: str
    created_at: datetime | None = None
    last_message_at: datetime | None = None
    message_count: int
    agent_session_id: str | None = None
    agent_user_id: str | None = None


class UserOut(BaseModel):
    """One person; `external_ids` and `sessions` only when read on its own (GET /users/{id})."""

    id: str
    instance_name: str
    channel: str
    identity: str
    display_name: str | None = None
    phone_number: str | None = None
    first_seen_at: datetime | None = None
    last_seen_at: datetime | None = None
    message_count: int
    external_ids: list[ExternalIdOut] | None = None
    sessions: list[SessionOut] | None = None


class UserList(BaseModel):
    """One page of users, most recently seen first."""

    users: list[UserOut]
    page: int
    page_size: int
    total_count: int


class SessionList(BaseModel):
    """One page of sessions, most recent message first."""

    sessions: list[SessionOut]
    page: int
    page_size: int
    total_count: int


class LinkIn(BaseModel):
    """The user to merge into the one in the path (it is deleted; its ids and sessions move)."""

    model_config = ConfigDict(extra="forbid")

    user_id: str = Field(min_length=1, max_length=256)


class UserErasureOut(BaseModel):
    """What erasing a user removed."""

    user_id: str
    status: str = "deleted"
    sessions_deleted: int
    traces_deleted: int
    inbox_messages_deleted: int
