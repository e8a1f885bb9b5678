"""The unified Omni API's channel list: where an instance's account can send."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ChannelOut(BaseModel):
    """One channel the instance's account sees: a Discord or Slack channel (`id` is a send-text recipient), or for
    WhatsApp the account itself (kind `account`, `id` the Evolution instance name; its chats are at `/chats`)."""

    instance_name: str
    channel_type: str
    status: str = Field(description="The instance's connection status (connected, connecting, disconnected, error).")
    id: str
    name: str
    kind: str = Field(description="text, voice, thread, forum, announcement, stage, category; account (WhatsApp).")
    guild_id: str | None = None
    guild_name: str | None = None
    parent_id: str | None = None


class ChannelList(BaseModel):
    """Every channel the account sees, by guild then position."""

    channels: list[ChannelOut]
