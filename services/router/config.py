"""Settings of the router service."""

from __future__ import annotations

from pydantic import AliasChoices, Field

from servicekit.settings import MeshSettings


class Settings(MeshSettings):
    """Router configuration (env AUTOMAGIK_OMNI_<FIELD>)."""

    secret_key: str = Field(default="", validation_alias=AliasChoices("AUTOMAGIK_OMNI_SECRET_KEY"))
    """Fernet master key that encrypts instance secrets at rest. Required in production; in development one is
    generated into `<data_dir>/secret.key` and reused."""
    router_channel_send_timeout_seconds: float = 30.0
    """Deadline of one ChannelsService.SendMessage call (channels retries the network itself within it)."""
    router_presence_timeout_seconds: float = 2.0
    """Deadline of the best-effort typing indicator."""
    router_account_check_timeout_seconds: float = 15.0
    """Deadline of the channel's credential check when an instance is created or its channel settings change."""
    router_instance_cache_seconds: float = 2.0
    """How long the router reuses an instance it read (changes through another router replica show after this)."""
    router_typing_delay_seconds: float = 1.0
    """Show "typing..." only when the agent has not answered after this long: a fast agent needs no indicator,
    and skipping it saves a channel round trip per message. Negative disables the indicator."""
    router_agent_max_connections: int = 512
    """Connection pool size of the shared aiohttp session used for agent calls."""
    router_watch_queue_size: int = 1000
    """Changes buffered per WatchInstances stream before a slow watcher is disconnected (it then re-snapshots)."""
