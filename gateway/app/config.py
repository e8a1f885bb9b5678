"""Gateway settings: the public API's host, port, key and CORS, plus the deadlines of the calls it makes."""

from __future__ import annotations

from pydantic import Field

from servicekit.settings import MeshSettings


class MissingApiKeyError(RuntimeError):
    """The admin key is empty: the gateway refuses to serve an API anyone could call."""


class Settings(MeshSettings):
    """Configuration of the gateway process (env prefix AUTOMAGIK_OMNI_)."""

    api_key: str = ""
    """The admin key every /api/v1 call presents in `x-api-key` (AUTOMAGIK_OMNI_API_KEY, required)."""
    api_host: str = "0.0.0.0"
    """Interface the HTTP server binds to."""
    api_port: int = Field(default=8882, ge=0, le=65535)
    """Port the HTTP server listens on."""
    api_public_url: str = ""
    """Base URL the outside world reaches the gateway at (for webhook_url); empty uses the request's own base URL."""
    api_workers: int = Field(default=1, ge=1, le=64)
    """Uvicorn worker processes; more than one spreads the webhook hot path over several cores."""
    api_access_log: bool = False
    """Log one line per request; off by default because the webhook path runs at ~1000 req/s."""
    cors_origins: str = ""
    """Comma list of origins allowed by CORS ("*" for any); empty disables CORS headers."""
    api_rpc_timeout_seconds: float = Field(default=10.0, gt=0)
    """Deadline of reads and instance writes (calls that do no slow work)."""
    api_send_timeout_seconds: float = Field(default=120.0, gt=0)
    """Deadline of send-text/send-media: the channel retries a failing send for at least 60 s before giving up."""
    api_webhook_timeout_seconds: float = Field(default=10.0, gt=0)
    """Deadline of ReceiveWebhook; well under Evolution's 30 s request timeout so it retries rather than duplicates."""
    api_channel_timeout_seconds: float = Field(default=20.0, gt=0)
    """Deadline of connection status / QR calls, which ask the channel gateway (Evolution) over HTTP."""
    api_health_timeout_seconds: float = Field(default=1.0, gt=0)
    """Deadline of each gRPC health check made by /health."""

    @property
    def cors_origin_list(self) -> list[str]:
        """The CORS origins as a list, blanks dropped."""
        return [origin.strip() for origin in self.cors_origins.split(",") if origin.strip()]

    def require_api_key(self) -> None:
        """Raise `MissingApiKeyError` when no admin key is configured.

        Raises:
            MissingApiKeyError: AUTOMAGIK_OMNI_API_KEY is empty or blank.
        """
        if not self.api_key.strip():
            raise MissingApiKeyError(
                "AUTOMAGIK_OMNI_API_KEY is not set: the gateway refuses to start without an admin API key "
                "(set it in the environment or in .env)"
            )
