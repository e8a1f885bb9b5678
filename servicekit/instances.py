"""The instance as every mesh service sees it: a frozen value with clear secrets and one channel config.

The router owns instances and stores them; ingress and channels keep a cache of them (see `instance_watch`). Each
channel's fields live in one config class (the `oneof channel_config` arms of `omni.router.v1.Instance`), so a new
channel field touches one class here and one proto message. Cores depend on the `InstanceDirectory` protocol, never
on gRPC.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar, Protocol, TypeVar

from servicekit.channels import Channel, ChannelTraits, traits_of


@dataclass(frozen=True)
class WhatsAppConfig:
    """A WhatsApp account behind an Evolution API server."""

    CHANNEL: ClassVar[Channel] = Channel.WHATSAPP
    SECRETS: ClassVar[tuple[str, ...]] = ("evolution_key", "instance_token")
    PUBLIC_NAMES: ClassVar[dict[str, str]] = {
        "evolution_url": "evolution_url",
        "evolution_key": "evolution_key",
        "whatsapp_instance": "whatsapp_instance",
        "instance_token": "evolution_instance_token",
    }
    """Config field -> the public REST field (CONTRACT.md)."""

    evolution_url: str = ""
    evolution_key: str = ""
    whatsapp_instance: str = ""
    instance_token: str = ""
    """The Evolution instance's own token (instance/create's "hash"): it reaches this instance only, so calls on the
    instance use it rather than the server's global key when Omni provisioned the instance."""


@dataclass(frozen=True)
class DiscordConfig:
    """A Discord bot that ingress runs for the instance."""

    CHANNEL: ClassVar[Channel] = Channel.DISCORD
    SECRETS: ClassVar[tuple[str, ...]] = ("bot_token",)
    PUBLIC_NAMES: ClassVar[dict[str, str]] = {
        "bot_token": "discord_bot_token",
        "client_id": "discord_client_id",
        "guild_id": "discord_guild_id",
    }

    bot_token: str = ""
    client_id: str = ""
    guild_id: str = ""
    """When set, the bot answers in this guild only (DMs are always answered)."""


@dataclass(frozen=True)
class SlackConfig:
    """A Slack app installed in one workspace."""

    CHANNEL: ClassVar[Channel] = Channel.SLACK
    SECRETS: ClassVar[tuple[str, ...]] = ("bot_token", "signing_secret", "app_token")
    PUBLIC_NAMES: ClassVar[dict[str, str]] = {
        "bot_token": "slack_bot_token",
        "signing_secret": "slack_signing_secret",
        "app_token": "slack_app_token",
        "bot_user_id": "slack_bot_user_id",
        "team_id": "slack_team_id",
        "team_name": "slack_team_name",
    }

    bot_token: str = ""
    signing_secret: str = ""
    app_token: str = ""
    bot_user_id: str = ""
    """The bot's own user id (auth.test at creation): its posts come back as events and must be ignored."""
    team_id: str = ""
    team_name: str = ""


ChannelConfig = WhatsAppConfig | DiscordConfig | SlackConfig
CONFIG_TYPES: dict[Channel, type[ChannelConfig]] = {c.CHANNEL: c for c in (WhatsAppConfig, DiscordConfig, SlackConfig)}
"""The config class of each channel; its CHANNEL is also the proto oneof arm's name."""

INSTANCE_SECRETS: tuple[str, ...] = (
    "agent_api_key",
    "webhook_secret",
    "previous_webhook_secret",
    "agent_signing_secret",
    "transcription_api_key",
)
"""Secrets of the instance itself (the channel configs name theirs in SECRETS)."""

WEBHOOK_AUTH_SECRET = "secret"
"""Webhooks must prove the instance's webhook secret (or the channel's own signature): the default."""
WEBHOOK_AUTH_NONE = "none"
"""Webhooks are accepted unauthenticated: an explicit opt-out for local trials, refused in production."""
WEBHOOK_AUTH_MODES: tuple[str, ...] = (WEBHOOK_AUTH_SECRET, WEBHOOK_AUTH_NONE)

GROUP_REPLY_MENTION = "mention"
"""Group messages reach the agent when the bot is mentioned or replied to: the default."""
GROUP_REPLY_ALL = "all"
GROUP_REPLY_NEVER = "never"
GROUP_REPLY_MODES: tuple[str, ...] = (GROUP_REPLY_MENTION, GROUP_REPLY_ALL, GROUP_REPLY_NEVER)

ACCESS_OPEN = "open"
"""Every sender reaches the agent except those a block rule matches: the default."""
ACCESS_ALLOWLIST = "allowlist"
"""Only senders an allow rule matches reach the agent."""
ACCESS_MODES: tuple[str, ...] = (ACCESS_OPEN, ACCESS_ALLOWLIST)

C = TypeVar("C", WhatsAppConfig, DiscordConfig, SlackConfig)


@dataclass(frozen=True)
class Instance:
    """One tenant's channel account and agent, secrets in clear: never log or trace this object."""

    name: str
    config: ChannelConfig = field(default_factory=WhatsAppConfig)
    agent_api_url: str = ""
    agent_api_key: str = ""
    default_agent: str = ""
    agent_timeout_seconds: int = 60
    enable_auto_split: bool = True
    is_active: bool = True
    automagik_instance_id: str = ""
    automagik_instance_name: str = ""
    fallback_text: str = ""
    webhook_secret: str = ""
    created_at: float = 0.0
    updated_at: float = 0.0
    id: str = ""
    """Immutable UUID: per-tenant data and caches are keyed by it, so a reused name inherits nothing."""
    webhook_auth: str = WEBHOOK_AUTH_SECRET
    previous_webhook_secret: str = ""
    """The secret the last rotation replaced, accepted until `previous_webhook_secret_expires_at`."""
    previous_webhook_secret_expires_at: float = 0.0
    agent_signing_secret: str = ""
    """Keys the Standard Webhooks signature of agent calls ("whsec_" + base64 of the key bytes)."""
    group_reply: str = GROUP_REPLY_MENTION
    """Which group messages reach the agent (GROUP_REPLY_MODES)."""
    transcription_url: str = ""
    """OpenAI-compatible base URL voice notes are transcribed at; empty: the deployment's default, if any."""
    transcription_api_key: str = ""
    transcription_model: str = ""
    access_mode: str = ACCESS_OPEN
    """Who reaches the agent (ACCESS_MODES)."""
    blocked_text: str = ""
    """Sent to a blocked sender when set; empty: a blocked message is answered nothing."""
    agent_max_attempts: int = 0
    """Agent call attempts before a message's trace ends in error; 0: the deployment's delivery attempts."""
    session_id_prefix: str = ""
    """Starts the session names the agent receives."""

    def __repr__(self) -> str:
        return f"Instance(name={self.name!r}, channel={self.channel.value!r})"

    @property
    def channel(self) -> Channel:
        """The network this instance serves (the arm of its config)."""
        return self.config.CHANNEL

    @property
    def traits(self) -> ChannelTraits:
        """What the instance's channel declares (text limit, splitting, quoting)."""
        return traits_of(self.channel)

    def webhook_secrets(self, now: float) -> tuple[str, ...]:
        """The webhook secrets a request may present at `now`: the current one, and the replaced one during its
        grace period."""
        secrets = [self.webhook_secret] if self.webhook_secret else []
        if self.previous_webhook_secret and now < self.previous_webhook_secret_expires_at:
            secrets.append(self.previous_webhook_secret)
        return tuple(secrets)

    def config_of(self, kind: type[C]) -> C:
        """The channel config as `kind`; raises TypeError when the instance is of another channel."""
        if not isinstance(self.config, kind):
            raise TypeError(f"instance {self.name!r} is a {self.channel} instance, not {kind.CHANNEL}")
        return self.config


def config_values(config: ChannelConfig) -> dict[str, str]:
    """The config's fields by name (secrets included)."""
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}


def public_fields() -> dict[str, tuple[Channel, str]]:
    """Every channel field by its public REST name: (channel, config field)."""
    return {
        public: (kind.CHANNEL, name) for kind in CONFIG_TYPES.values() for name, public in kind.PUBLIC_NAMES.items()
    }


class InstanceDirectory(Protocol):
    """Looks instances up by name."""

    async def get(self, name: str) -> Instance:
        """The instance called `name`; raises `NotFoundError` when there is none."""
        ...
