"""Settings of the router service."""

from __future__ import annotations

from pydantic import AliasChoices, Field

from servicekit.settings import MeshSettings


class Settings(MeshSettings):
    """Router configuration (env AUTOMAGIK_OMNI_<FIELD>)."""

    secret_key: str = Field(default="", validation_alias=AliasChoices("AUTOMAGIK_OMNI_SECRET_KEY"))
    """Fernet master key that encrypts instance secrets at rest (the single-key form of `secret_keys`). Required in
    production (one of the two); in development one is generated into `secret_key_file` and reused."""
    secret_keys: str = Field(default="", validation_alias=AliasChoices("AUTOMAGIK_OMNI_SECRET_KEYS"))
    """Comma list of Fernet master keys, newest first: the first encrypts, all decrypt (key rotation, see
    `python -m services.router.rotate_secrets`)."""
    secret_key_file: str = Field(
        default=".secrets/master.key", validation_alias=AliasChoices("AUTOMAGIK_OMNI_SECRET_KEY_FILE")
    )
    """Development master key file (generated when missing), kept apart from the databases; unused when a key is
    configured."""
    router_purge_timeout_seconds: float = 30.0
    """Deadline of each service's PurgeInstance when an instance is deleted."""
    router_channel_send_timeout_seconds: float = 30.0
    """Deadline of one ChannelsService.SendMessage call (channels retries the network itself within it)."""
    router_presence_timeout_seconds: float = 2.0
    """Deadline of the best-effort typing indicator."""
    public_url: str = Field(default="http://localhost:8882", validation_alias=AliasChoices("AUTOMAGIK_OMNI_PUBLIC_URL"))
    """The hub's public base URL: webhook URLs registered with channels (Evolution's webhook/set) are built from it,
    never guessed from a request's Host. Empty: Omni registers nothing and the operator configures webhooks."""
    router_webhook_secret_grace_seconds: float = 24 * 3600.0
    """How long a rotated-out webhook secret is still accepted."""
    router_account_check_timeout_seconds: float = 15.0
    """Deadline of the channel's credential check when an instance is created or its channel settings change."""
    router_instance_cache_seconds: float = 2.0
    """How long the router reuses an instance it read (changes through another router replica show after this)."""
    router_typing_delay_seconds: float = 1.0
    """Show "typing..." only when the agent has not answered after this long: a fast agent needs no indicator,
    and skipping it saves a channel round trip per message. Negative disables the indicator."""
    router_agent_max_connections: int = 512
    """Connection pool size of the shared aiohttp session used for agent calls."""
    router_agent_max_response_bytes: int = 1024 * 1024
    """Largest agent reply read back; a bigger one is an agent error, abandoned without buffering it."""
    router_watch_queue_size: int = 1000
    """Changes buffered per WatchInstances stream before a slow watcher is disconnected (it then re-snapshots)."""
    max_media_bytes: int = 16 * 1024 * 1024
    """Largest received file handed to an agent (AUTOMAGIK_OMNI_MAX_MEDIA_BYTES); a bigger one reaches the agent as a
    media entry without base64, and the trace's media.fetch span says why."""
    router_media_fetch_timeout_seconds: float = 90.0
    """Deadline of one file read (ingress GetMedia, channels FetchMedia) before the agent call."""
    transcription_url: str = ""
    """Deployment-wide OpenAI-compatible transcription base URL (AUTOMAGIK_OMNI_TRANSCRIPTION_URL), for instances that
    name none; voice notes are posted to {url}/v1/audio/transcriptions before the agent turn. Empty: none."""
    transcription_api_key: str = ""
    """Bearer key of the deployment-wide endpoint (AUTOMAGIK_OMNI_TRANSCRIPTION_API_KEY); never sent to an instance's
    own transcription_url."""
    transcription_model: str = "whisper-1"
    """Model named in the deployment-wide transcription requests (AUTOMAGIK_OMNI_TRANSCRIPTION_MODEL), and the default
    of instances that name a URL but no model."""
    transcription_timeout_seconds: float = Field(
        default=30.0,
        validation_alias=AliasChoices(
            "AUTOMAGIK_OMNI_TRANSCRIPTION_TIMEOUT", "AUTOMAGIK_OMNI_TRANSCRIPTION_TIMEOUT_SECONDS"
        ),
    )
    """How long one transcription may take, in seconds (AUTOMAGIK_OMNI_TRANSCRIPTION_TIMEOUT); then the agent gets the
    audio with the failure note."""
