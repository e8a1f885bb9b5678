"""Gateway settings: the public API's host, port, key and CORS, plus the deadlines of the calls it makes."""

from __future__ import annotations

from pydantic import AliasChoices, Field, model_validator

from servicekit.settings import MeshSettings


class MissingApiKeyError(RuntimeError):
    """The admin key is empty: the gateway refuses to serve an API anyone could call."""


class WeakApiKeyError(MissingApiKeyError):
    """In production the admin key is short or an example value: as good as none."""


MIN_PRODUCTION_API_KEY_LENGTH = 32
"""Shortest admin key accepted when ENVIRONMENT=production."""

EXAMPLE_API_KEYS = frozenset(
    {
        "change-me",
        "changeme",
        "change_me",
        "your-api-key",
        "your_api_key",
        "your-api-key-here",
        "your-secret-api-key",
        "your-secret-api-key-here",
        "replace-me-with-a-long-random-secret-key",
        "change-me-to-a-long-random-secret-in-production",
    }
)
"""Placeholders from `.env.example` and docs (compared case-insensitively): copied as is, they are public."""


class Settings(MeshSettings):
    """Configuration of the gateway process (env prefix AUTOMAGIK_OMNI_)."""

    api_key: str = ""
    """The admin key every /api/v1 call presents in `x-api-key` (AUTOMAGIK_OMNI_API_KEY, required)."""
    api_host: str = "0.0.0.0"
    """Interface the HTTP server binds to."""
    api_port: int = Field(default=8882, ge=0, le=65535)
    """Port the HTTP server listens on."""
    api_public_url: str = Field(
        default="",
        validation_alias=AliasChoices("AUTOMAGIK_OMNI_PUBLIC_URL", "AUTOMAGIK_OMNI_API_PUBLIC_URL", "api_public_url"),
    )
    """Base URL the outside world reaches the gateway at (for webhook_url; the router registers webhooks with the
    same setting); empty uses the request's own base URL."""
    api_workers: int = Field(default=1, ge=1, le=64)
    """Uvicorn worker processes; more than one spreads the webhook hot path over several cores."""
    api_access_log: bool = False
    """Log one line per request; off by default because the webhook path runs at ~1000 req/s."""
    cors_origins: str = ""
    """Comma list of origins allowed by CORS ("*" for any, refused in production); empty disables CORS headers."""
    max_request_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1)
    """Largest REST request body (AUTOMAGIK_OMNI_MAX_REQUEST_BODY_BYTES); send-media may carry base64 media."""
    max_webhook_body_bytes: int = Field(default=64 * 1024 * 1024, ge=1)
    """Largest webhook body (AUTOMAGIK_OMNI_MAX_WEBHOOK_BODY_BYTES); Evolution may post media as base64."""
    max_json_depth: int = Field(default=64, ge=0)
    """Deepest JSON nesting accepted in a request or webhook body (0: only the parser's own limit)."""
    webhook_rate_limit: float = Field(default=1000.0, ge=0)
    """Webhooks per second per instance (token bucket; 0 disables); per gateway worker process."""
    webhook_rate_burst: int = Field(default=2000, ge=1)
    """Webhooks an instance may send at once above its rate."""
    send_rate_limit: float = Field(default=1000.0, ge=0)
    """REST send-* calls per second per instance (0 disables); per gateway worker process."""
    send_rate_burst: int = Field(default=2000, ge=1)
    """REST send-* calls an instance may make at once above its rate."""
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

    @model_validator(mode="after")
    def _no_wildcard_cors_in_production(self) -> Settings:
        """`*` lets any web page call the API from a user's browser: fine on a laptop, never in production."""
        if self.environment.strip().lower() == "production" and "*" in self.cors_origin_list:
            raise ValueError('AUTOMAGIK_OMNI_CORS_ORIGINS="*" is refused when ENVIRONMENT=production: list the origins')
        return self

    def require_api_key(self) -> None:
        """Raise `MissingApiKeyError` when no admin key is configured, or (in production) only a guessable one.

        Raises:
            MissingApiKeyError: AUTOMAGIK_OMNI_API_KEY is empty or blank.
            WeakApiKeyError: ENVIRONMENT=production and the key is short or an example value.
        """
        if not self.api_key.strip():
            raise MissingApiKeyError(
                "AUTOMAGIK_OMNI_API_KEY is not set: the gateway refuses to start without an admin API key "
                "(set it in the environment or in .env)"
            )
        if not self.is_production:
            return
        if self.api_key.strip().lower() in EXAMPLE_API_KEYS:
            raise WeakApiKeyError(
                "AUTOMAGIK_OMNI_API_KEY is an example value: the gateway refuses to start with it when "
                "ENVIRONMENT=production (generate one, e.g. `openssl rand -hex 32`)"
            )
        if len(self.api_key) < MIN_PRODUCTION_API_KEY_LENGTH:
            raise WeakApiKeyError(
                f"AUTOMAGIK_OMNI_API_KEY is shorter than {MIN_PRODUCTION_API_KEY_LENGTH} characters: the gateway "
                "refuses to start with it when ENVIRONMENT=production (generate one, e.g. `openssl rand -hex 32`)"
            )
