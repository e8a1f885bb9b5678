"""The /health answer."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class BotHealth(BaseModel):
    """One bot the hub runs for an instance (a Discord bot)."""

    channel_type: str
    status: str = Field(description="connected, connecting, disconnected or error.")
    detail: str | None = None


class HealthOut(BaseModel):
    """Overall health plus each mesh service's gRPC health status (SERVING, NOT_SERVING, UNAVAILABLE, ...) and the
    state of each hosted bot by instance name (null when ingress could not be asked)."""

    status: Literal["healthy", "unhealthy"]
    services: dict[str, str]
    bots: dict[str, BotHealth] | None = None
    connections: dict[str, int] | None = Field(
        default=None,
        description="How many instances the channels last reported in each connection state (connected, connecting, "
        "disconnected, error), recorded from their connection webhooks: no channel is asked, and no instance is named "
        "(null when the channels service could not be asked).",
    )
