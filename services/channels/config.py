"""Settings of the channels service (env AUTOMAGIK_OMNI_<FIELD>)."""

from __future__ import annotations

import socket

from pydantic import AliasChoices, Field

from servicekit.settings import MeshSettings


class Settings(MeshSettings):
    """Mesh settings plus the knobs of the outbox and the Evolution client."""

    channels_evolution_timeout_seconds: float = 15.0
    """Total time one Evolution HTTP request may take; past it a send's outcome is unknown and is reconciled."""
    channels_discord_timeout_seconds: float = 15.0
    """Total time one Discord send may take (rate-limit waits included); past it the outcome is unknown."""
    channels_discord_max_ratelimit_wait_seconds: float = 10.0
    """Longest Discord rate-limit pause a send waits out in place; a longer one is handed back to the caller as
    UNAVAILABLE with Discord's retry-after, so a send with a deadline fails fast instead of hanging."""
    channels_send_attempts: int = 3
    """Quick tries of one part within one SendMessage call before answering UNAVAILABLE (the caller retries)."""
    channels_retry_backoff_seconds: float = 0.2
    """Pause before the second in-call try; each later pause is 2.5 times longer (0.2 s, 0.5 s, ...)."""
    channels_retry_after_seconds: float = 2.0
    """Retry hint given to the caller after a transient failure that came without its own Retry-After."""
    channels_rate_limit_backoff_seconds: float = 10.0
    """Retry hint after WhatsApp's rate-overlimit (a 400 from Evolution that is really a throttle)."""
    channels_part_delay_ms: int = 0
    """Pause between two parts of one reply, so a long answer reads like typing rather than a burst."""
    channels_reconcile_window_seconds: float = 60.0
    """How far before a send of unknown outcome findMessages looks for it (covers clock skew with Evolution)."""
    evolution_api_key: str = Field(default="", validation_alias=AliasChoices("EVOLUTION_API_KEY"))
    """Deployment-wide Evolution API key used for instances that have none of their own."""
    whatsapp_receipts: bool = True
    """Subscribe Evolution's delivery and read receipts (MESSAGES_UPDATE) when Omni sets an instance's webhook, so
    traces show whether replies were delivered and read; each receipt is one more webhook through the mesh."""
    evolution_api_url: str = Field(default="", validation_alias=AliasChoices("EVOLUTION_API_URL"))
    """The deployment's default Evolution server: instance discovery lists it too (with EVOLUTION_API_KEY), even
    before any instance uses it."""
    channels_replica_id: str = ""
    """This replica's name on the parts it is sending; empty means "<hostname>-<port>". Keep it stable across
    restarts so a restarted replica reconciles its own interrupted sends at once instead of waiting out the lease."""

    def replica_id(self) -> str:
        """The configured replica id, or "<hostname>-<channels port>"."""
        return self.channels_replica_id or f"{socket.gethostname()}-{self.channels_grpc_port}"
