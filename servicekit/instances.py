"""The instance as the mesh services other than the router see it: a frozen value with clear secrets.

The router owns instances; ingress and channels keep a cache of them (see `instance_watch`). Cores depend on the
`InstanceDirectory` protocol, never on gRPC.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class InstanceConfig:
    """One tenant's channel account and agent, secrets in clear (never log this object)."""

    name: str
    channel: str
    """whatsapp, discord or slack."""
    evolution_url: str = ""
    evolution_key: str = ""
    whatsapp_instance: str = ""
    discord_bot_token: str = ""
    discord_client_id: str = ""
    discord_guild_id: str = ""
    slack_bot_token: str = ""
    slack_signing_secret: str = ""
    agent_api_url: str = ""
    agent_api_key: str = ""
    default_agent: str = ""
    agent_timeout_seconds: int = 60
    enable_auto_split: bool = True
    is_active: bool = True
    fallback_text: str = ""
    webhook_secret: str = ""

    def __repr__(self) -> str:
        return f"InstanceConfig(name={self.name!r}, channel={self.channel!r})"


class InstanceDirectory(Protocol):
    """Looks instances up by name."""

    async def get(self, name: str) -> InstanceConfig:
        """The instance called `name`; raises `NotFoundError` when there is none."""
        ...
