"""What a hosted bot reports about itself: its connection as the public status shows it."""

from __future__ import annotations

from dataclasses import dataclass, field

from servicekit.channels import Channel

CONNECTED = "connected"
CONNECTING = "connecting"
DISCONNECTED = "disconnected"
ERROR = "error"


@dataclass(frozen=True)
class BotStatus:
    """One bot's connection: state is connected, connecting, disconnected or error (with `detail`)."""

    instance_name: str
    channel: Channel
    state: str
    detail: str = ""
    owner: str = ""
    workspaces: tuple[tuple[str, str], ...] = field(default=())
    """(id, name) of each guild the bot is in."""
    latency_ms: float = 0.0
    account_id: str = ""
    account_name: str = ""
    updated_at: float = 0.0
