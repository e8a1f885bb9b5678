"""Settings of the ingress service (env AUTOMAGIK_OMNI_<FIELD>)."""

from __future__ import annotations

import socket

from servicekit.settings import MeshSettings


class Settings(MeshSettings):
    """Mesh settings plus the inbox dispatcher's knobs."""

    ingress_replica_id: str = ""
    """This replica's name in inbox leases; empty means "<hostname>-<port>". Keep it stable across restarts so a
    restarted replica takes its own leased messages back at once instead of waiting for the lease to expire."""
    ingress_route_deadline_seconds: float = 180.0
    """Deadline of one RouterService.RouteMessage call (the agent call and the reply sends happen inside it)."""
    ingress_dispatch_concurrency: int = 64
    """How many messages this replica hands to the router at once (different conversations run in parallel)."""
    ingress_max_attempts: int = 8
    """Delivery attempts before a message is dead-lettered."""
    ingress_retry_base_seconds: float = 0.5
    """First back-off ceiling after a transient router failure; it doubles per attempt (full jitter)."""
    ingress_retry_max_seconds: float = 30.0
    """Largest back-off ceiling between two attempts."""
    ingress_lease_seconds: float = 30.0
    """How long a claimed message stays reserved without a heartbeat; after that another replica may take it."""
    ingress_poll_interval_seconds: float = 0.2
    """How often the dispatcher looks for due messages when nothing woke it up (retries, other replicas)."""

    ingress_bot_lease_seconds: float = 15.0
    """How long a bot stays owned by a replica that stopped renewing; after that another replica takes it over."""
    ingress_bot_renew_seconds: float = 5.0
    """How often a replica renews its bots' leases and stores their status (also when instances change)."""
    ingress_bot_error_retry_seconds: float = 300.0
    """How long a bot the channel refused for good (revoked token, missing intent) stays down before a retry; an
    update of the instance's channel settings retries at once."""
    max_media_bytes: int = 16 * 1024 * 1024
    """Largest received file kept in the media store (AUTOMAGIK_OMNI_MAX_MEDIA_BYTES); a bigger one reaches the agent
    as a media entry without bytes, and the trace says why."""
    media_retention_hours: float = 24.0
    """How long received files stay in the media store (AUTOMAGIK_OMNI_MEDIA_RETENTION_HOURS); 0 keeps them until
    their instance is deleted."""
    discord_guild_ready_timeout_seconds: float = 2.0
    """How long a Discord bot waits for its guilds after READY before it reports itself ready."""

    def replica_id(self) -> str:
        """The configured replica id, or "<hostname>-<ingress port>"."""
        return self.ingress_replica_id or f"{socket.gethostname()}-{self.ingress_grpc_port}"
