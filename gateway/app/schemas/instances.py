"""Instance request and response models (the public contract's instance JSON)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, Field, model_validator

from gateway.app.schemas.common import HttpUrl, LongText, SecretText, ShortText, valid_utf8
from servicekit.instance_names import NAME_PATTERN, RESERVED_NAMES

ChannelType = Literal["whatsapp", "discord", "slack"]
WebhookAuth = Literal["secret", "none"]
GroupReply = Literal["mention", "all", "never"]
AccessMode = Literal["open", "allowlist"]
ConnectionStatus = Literal["connected", "connecting", "disconnected", "error"]


SECRET_FIELDS = (
    "evolution_key",
    "discord_bot_token",
    "slack_bot_token",
    "slack_signing_secret",
    "slack_app_token",
    "agent_api_key",
    "webhook_secret",
    "transcription_api_key",
)
"""Instance fields that are secrets: written in clear, read back only as a masked hint."""

CHANNEL_FIELDS: dict[str, tuple[str, ...]] = {
    "whatsapp": ("evolution_url", "evolution_key", "whatsapp_instance"),
    "discord": ("discord_bot_token", "discord_client_id", "discord_guild_id"),
    "slack": ("slack_bot_token", "slack_signing_secret", "slack_app_token"),
}
"""The public fields of each channel (the arms of the instance's channel config)."""

REQUIRED_CHANNEL_FIELDS: dict[str, tuple[str, ...]] = {
    "whatsapp": ("evolution_url", "whatsapp_instance"),
    "discord": ("discord_bot_token",),
    "slack": ("slack_bot_token", "slack_signing_secret"),
}


def foreign_channel_fields(channel_type: str, present: set[str]) -> list[str]:
    """The fields in `present` that belong to a channel other than `channel_type`."""
    return sorted(
        name for other, names in CHANNEL_FIELDS.items() if other != channel_type for name in names if name in present
    )


def valid_instance_name(value: str) -> str:
    """Lower-case `[a-z0-9][a-z0-9_-]{0,62}` and not a reserved route word."""
    valid_utf8(value)
    if not NAME_PATTERN.fullmatch(value):
        raise ValueError("must match [a-z0-9][a-z0-9_-]{0,62} (lower case letters, digits, '_' and '-')")
    if value in RESERVED_NAMES:
        raise ValueError(f"'{value}' is reserved (it collides with an API route)")
    return value


def _blank_to_none(value: object) -> object:
    """Clients often send "" for an unset optional field; treat it as not set."""
    return None if value == "" else value


InstanceName = Annotated[str, AfterValidator(valid_instance_name)]
OptionalUrl = Annotated[HttpUrl | None, BeforeValidator(_blank_to_none)]
AgentTimeout = Annotated[int, Field(ge=1, le=600, description="Seconds an agent call may take, retries included.")]


class InstanceFields(BaseModel):
    """Fields that are optional both when creating and when updating an instance."""

    evolution_url: OptionalUrl = Field(default=None, description="Base URL of the Evolution API server (WhatsApp).")
    evolution_key: SecretText | None = Field(default=None, description="Evolution API key (write-only).")
    whatsapp_instance: ShortText | None = Field(default=None, description="Evolution's own instance name.")
    discord_bot_token: SecretText | None = Field(default=None, description="Discord bot token (write-only).")
    discord_client_id: ShortText | None = None
    discord_guild_id: ShortText | None = None
    slack_bot_token: SecretText | None = Field(default=None, description="Slack bot token xoxb-... (write-only).")
    slack_signing_secret: SecretText | None = Field(default=None, description="Slack signing secret (write-only).")
    slack_app_token: SecretText | None = Field(
        default=None, description="Slack app token xapp-... for Socket Mode (write-only)."
    )
    agent_api_key: SecretText | None = Field(default=None, description="Sent to the agent as x-api-key (write-only).")
    default_agent: ShortText | None = None
    automagik_instance_id: ShortText | None = None
    automagik_instance_name: ShortText | None = None
    fallback_text: LongText | None = Field(default=None, description="Sent when the agent fails for good.")
    webhook_secret: SecretText | None = Field(
        default=None,
        description="Secret every channel webhook must present (header x-omni-webhook-secret, an HS256 JWT signed "
        "with it, or opt-in ?secret=). Generated when not given; at least 16 characters.",
    )
    webhook_auth: WebhookAuth | None = Field(
        default=None,
        description='"secret" (default) or "none": accept unauthenticated webhooks, for local trials only '
        "(refused in production).",
    )
    group_reply: GroupReply | None = Field(
        default=None,
        description='Which group messages reach the agent: "mention" (default: the bot is mentioned or replied to), '
        '"all" or "never".',
    )
    transcription_url: OptionalUrl = Field(
        default=None,
        description="OpenAI-compatible base URL: voice notes are posted to {url}/v1/audio/transcriptions before the "
        "agent turn (default: AUTOMAGIK_OMNI_TRANSCRIPTION_URL).",
    )
    transcription_api_key: SecretText | None = Field(
        default=None, description="Bearer key of the transcription endpoint (write-only)."
    )
    transcription_model: ShortText | None = Field(default=None, description="Transcription model (default whisper-1).")
    access_mode: AccessMode | None = Field(
        default=None,
        description='"open" (default: everyone but blocked senders reaches the agent) or "allowlist" (only senders '
        "an allow rule matches).",
    )
    blocked_text: LongText | None = Field(default=None, description="Sent to a blocked sender (default: nothing).")
    agent_max_attempts: int | None = Field(
        default=None, ge=0, le=100, description="Agent call attempts before the trace ends in error (0: the default)."
    )
    session_id_prefix: ShortText | None = Field(default=None, description="Starts the session names the agent gets.")


class InstanceCreate(InstanceFields):
    """Body of POST /api/v1/instances."""

    name: InstanceName
    channel_type: ChannelType = "whatsapp"
    agent_api_url: HttpUrl = Field(description="Base URL of the agent (the hub POSTs to {url}/api/agent/chat).")
    agent_timeout: AgentTimeout = 60
    enable_auto_split: bool = True
    is_active: bool = True

    @model_validator(mode="after")
    def _channel_requirements(self) -> InstanceCreate:
        missing = [f for f in REQUIRED_CHANNEL_FIELDS[self.channel_type] if not getattr(self, f)]
        if missing:
            raise ValueError(f"a {self.channel_type} instance needs {' and '.join(missing)}")
        foreign = foreign_channel_fields(self.channel_type, {f for f in self.model_fields_set if getattr(self, f)})
        if foreign:
            raise ValueError(f"{', '.join(foreign)} cannot be set on a {self.channel_type} instance")
        return self


_NOT_NULLABLE = ("name", "channel_type", "agent_api_url", "agent_timeout", "enable_auto_split", "is_active")


class InstanceUpdate(InstanceFields):
    """Body of PUT /api/v1/instances/{name}: any subset of the create fields; only the fields sent change."""

    name: InstanceName | None = Field(default=None, description="Must equal the name in the path (no renames).")
    channel_type: ChannelType | None = None
    agent_api_url: HttpUrl | None = None
    agent_timeout: AgentTimeout | None = None
    enable_auto_split: bool | None = None
    is_active: bool | None = None

    @model_validator(mode="after")
    def _required_fields_not_cleared(self) -> InstanceUpdate:
        cleared = [f for f in _NOT_NULLABLE if f in self.model_fields_set and getattr(self, f) is None]
        if cleared:
            raise ValueError(f"{', '.join(cleared)} cannot be null")
        return self


class InstanceOut(BaseModel):
    """An instance as the API shows it: secrets only as a masked hint plus has_<field>."""

    name: str
    channel_type: str
    evolution_url: str | None = None
    evolution_key: str | None = Field(default=None, description="Masked hint, e.g. ****1FAB.")
    has_evolution_key: bool = False
    whatsapp_instance: str | None = None
    evolution_instance_token: str | None = Field(
        default=None,
        description="Masked hint of the Evolution instance token Omni stored when it created the instance.",
    )
    has_evolution_instance_token: bool = False
    discord_bot_token: str | None = None
    has_discord_bot_token: bool = False
    discord_client_id: str | None = None
    discord_guild_id: str | None = None
    slack_bot_token: str | None = None
    has_slack_bot_token: bool = False
    slack_signing_secret: str | None = None
    has_slack_signing_secret: bool = False
    slack_app_token: str | None = None
    has_slack_app_token: bool = False
    slack_bot_user_id: str | None = Field(default=None, description="The bot's user id (auth.test), read only.")
    slack_team_id: str | None = Field(default=None, description="The workspace id (auth.test), read only.")
    slack_team_name: str | None = Field(default=None, description="The workspace name (auth.test), read only.")
    agent_api_url: str | None = None
    agent_api_key: str | None = None
    has_agent_api_key: bool = False
    default_agent: str | None = None
    agent_timeout: int = 60
    enable_auto_split: bool = True
    is_active: bool = True
    automagik_instance_id: str | None = None
    automagik_instance_name: str | None = None
    fallback_text: str | None = None
    webhook_secret: str | None = Field(
        default=None, description="Masked hint; in the create response only, the secret in clear (shown once)."
    )
    has_webhook_secret: bool = False
    webhook_auth: WebhookAuth = "secret"
    agent_signing_secret: str | None = Field(
        default=None,
        description="Standard Webhooks key of agent calls (whsec_...): masked hint; in clear only in the create "
        "response.",
    )
    has_agent_signing_secret: bool = False
    group_reply: GroupReply = "mention"
    transcription_url: str | None = None
    transcription_api_key: str | None = Field(default=None, description="Masked hint.")
    has_transcription_api_key: bool = False
    transcription_model: str | None = None
    access_mode: AccessMode = "open"
    blocked_text: str | None = None
    agent_max_attempts: int = 0
    session_id_prefix: str | None = None
    id: str | None = Field(default=None, description="Immutable instance id.")
    webhook_url: str | None = Field(
        default=None,
        description="The URL the channel posts its events to (Evolution webhook, Slack Events API); null for "
        "Discord, whose bot receives its messages itself.",
    )
    created_at: datetime | None = None
    updated_at: datetime | None = None


class InstanceList(BaseModel):
    """One page of instances, ordered by name."""

    instances: list[InstanceOut]
    page: int
    page_size: int
    total_count: int


class WorkspaceOut(BaseModel):
    """A Discord guild (or Slack team) the account is in."""

    id: str
    name: str


class ConnectionStatusOut(BaseModel):
    """The channel connection state of an instance."""

    instance_name: str
    channel_type: str
    status: ConnectionStatus
    raw_state: str | None = Field(default=None, description="The channel gateway's own word (Evolution 'open', ...).")
    detail: str | None = None
    error_message: str | None = Field(default=None, description="Why the status is error (the channel's reason).")
    account_id: str | None = Field(default=None, description="The bot user's id (Discord).")
    account_name: str | None = None
    guilds: list[WorkspaceOut] | None = Field(default=None, description="The guilds a Discord bot is in.")
    latency_ms: float | None = Field(default=None, description="Gateway heartbeat round trip of a Discord bot.")


class QrCodeOut(ConnectionStatusOut):
    """The connection state plus the login QR code while connecting."""

    qr_code: str | None = Field(default=None, description="Base64 PNG (no data: prefix), or null.")
    pairing_code: str | None = None


class ConnectIn(BaseModel):
    """Optional body of POST /instances/{name}/connect."""

    model_config = {"extra": "forbid"}

    phone_number: Annotated[str, Field(pattern=r"^\+?[0-9 ()-]{8,24}$")] | None = Field(
        default=None,
        description="Ask for an 8-character pairing code for this number (international form) instead of a QR code.",
    )


class ConnectionActionOut(QrCodeOut):
    """The connection after connect, restart, logout or disconnect."""

    action: Literal["connect", "restart", "logout", "disconnect"]
    message: str | None = Field(default=None, description="The channel gateway's own words about the action.")


class DiscoveredInstanceOut(BaseModel):
    """An Evolution instance no Omni instance manages yet (create one with whatsapp_instance = name)."""

    name: str
    evolution_url: str
    status: ConnectionStatus
    raw_state: str | None = None
    owner_jid: str | None = Field(default=None, description="The WhatsApp account linked to it, when connected.")
    profile_name: str | None = None
    remote_id: str | None = Field(default=None, description="Evolution's id of the instance.")


class DiscoverOut(BaseModel):
    """GET /instances/discover."""

    instances: list[DiscoveredInstanceOut]
