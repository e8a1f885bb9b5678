"""The sender seam: the protocol a channel implements and the errors the outbox acts on.

Every failure a sender raises is classified once, in the sender, into what the outbox needs to know:
- `ChannelTransientError`: try again later. `outcome_unknown` is True when the request may have reached the
  channel (a timeout, a dropped connection, a proxy's 502/504), so the message may already be out and must be
  looked up (`find_sent`) before a resend. `rate_limited` with `retry_after` hands the channel's own pause back.
- `ChannelRejectedError`: the channel refused for good (a 4xx); resending the same request is useless. `reason`
  is the UPPER_SNAKE cause reported to the caller, the message is the channel's own words.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from servicekit.channels import Channel
from servicekit.instances import DiscordConfig, Instance, SlackConfig
from servicekit.messages import ContactCard, Location, Media, Profile, Reaction
from services.channels.core.models import ConnectionStatus, OutboundPart

REASON_REJECTED = "CHANNEL_REJECTED"
REASON_UNAUTHORIZED = "CHANNEL_UNAUTHORIZED"
REASON_NOT_FOUND = "CHANNEL_TARGET_NOT_FOUND"
REASON_MISCONFIGURED = "INSTANCE_MISCONFIGURED"
REASON_NOT_SUPPORTED = "CHANNEL_NOT_SUPPORTED"


class ChannelError(Exception):
    """Base of the classified channel failures."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ChannelTransientError(ChannelError):
    """Retry later; `retry_after` is the channel's own hint when it gave one."""

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        outcome_unknown: bool = False,
        rate_limited: bool = False,
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.outcome_unknown = outcome_unknown
        self.rate_limited = rate_limited


class ChannelRejectedError(ChannelError):
    """The channel refused the request for good."""

    def __init__(self, message: str, *, reason: str = REASON_REJECTED, status: int = 400) -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status


@dataclass(frozen=True)
class Account:
    """The channel account an instance's credentials belong to (a bot user); empty when the channel checks none."""

    id: str = ""
    name: str = ""
    workspace_id: str = ""
    """The workspace the account belongs to (the Slack team): the router stores it with the instance."""
    workspace_name: str = ""


@dataclass(frozen=True)
class ChatChannel:
    """A place the account can send to (a Discord guild channel)."""

    id: str
    name: str
    kind: str
    """text, voice, thread, forum, announcement, category or dm."""
    workspace_id: str = ""
    workspace_name: str = ""
    parent_id: str = ""


@dataclass(frozen=True)
class Contact:
    """A person the account can message (a Slack workspace's user)."""

    id: str
    name: str
    phone_number: str = ""
    avatar_url: str = ""
    email: str = ""


@dataclass(frozen=True)
class Chat:
    """A conversation of the account (a WhatsApp direct chat, group or newsletter); `id` is a send-text recipient."""

    id: str
    name: str
    chat_type: str
    """direct, group or channel."""
    unread_count: int = 0
    last_message_at: float | None = None
    """Epoch seconds of the last message, when the channel knows it."""
    avatar_url: str = ""
    last_message_text: str = ""


@runtime_checkable
class DirectorySender(Protocol):
    """What a sender with a chat list adds to `ChannelSender` (WhatsApp). A separate protocol, checked with
    isinstance, so channels without chats (Discord, Slack) need not implement it: they answer CHATS_NOT_LISTED."""

    async def list_chats(self, instance: Instance) -> list[Chat]:
        """Every chat of the account, in a stable order where new chats come last; the caller filters and pages."""
        ...

    async def find_chat(self, instance: Instance, chat_id: str) -> Chat | None:
        """One chat by the list's id, read fresh from the channel; None when there is none."""
        ...

    async def find_contact(self, instance: Instance, contact_id: str) -> Contact | None:
        """One contact by the list's id, read fresh from the channel; None when there is none."""
        ...


@dataclass(frozen=True)
class SendTarget:
    """Where one part goes: the chat, the message it answers (first part only) and the thread, when any."""

    chat_id: str
    reply_to: str = ""
    thread_id: str = ""


class ChannelSender(Protocol):
    """One channel's outbound side; every method uses the instance's own credentials, never another tenant's."""

    channel: Channel

    async def send_text(self, instance: Instance, target: SendTarget, text: str) -> str:
        """Send a text; returns the channel's id of the new message."""
        ...

    async def send_media(self, instance: Instance, target: SendTarget, media: Media, caption: str) -> str:
        """Send a file (by URL or raw base64) with an optional caption; returns the new message's id."""
        ...

    async def send_reaction(self, instance: Instance, target: SendTarget, reaction: Reaction) -> str:
        """React to a message of the chat (an empty emoji removes the reaction); returns the channel's id of what
        was sent."""
        ...

    async def send_location(self, instance: Instance, target: SendTarget, location: Location) -> str:
        """Send a map pin; returns the new message's id."""
        ...

    async def send_contacts(self, instance: Instance, target: SendTarget, contacts: Sequence[ContactCard]) -> str:
        """Send contact cards as one message; returns the new message's id."""
        ...

    async def fetch_profile(self, instance: Instance, chat_id: str) -> Profile:
        """The public profile of the person `chat_id` names."""
        ...

    async def send_presence(self, instance: Instance, chat_id: str, presence: str, duration_ms: int) -> None:
        """Show `presence` (composing, recording, paused, available) in the chat; best effort."""
        ...

    async def connection_status(self, instance: Instance, *, include_qr_code: bool) -> ConnectionStatus:
        """The account's connection; a channel that cannot be asked answers state ERROR with the detail."""
        ...

    async def find_sent(
        self, instance: Instance, chat_id: str, part: OutboundPart, since: float, exclude: set[str]
    ) -> str | None:
        """The id of a message this account sent to `chat_id` since `since` (epoch seconds) with the content of
        `part` and an id not in `exclude`; None when there is none, so the part may be sent again."""
        ...

    async def check_account(self, instance: Instance) -> Account:
        """The account the instance's credentials belong to; raises `ChannelRejectedError` when the channel refuses
        them and `ChannelTransientError` when it cannot be asked."""
        ...

    async def list_channels(self, instance: Instance) -> list[ChatChannel]:
        """The channels the account sees (empty for a channel without such a list)."""
        ...

    async def list_contacts(self, instance: Instance) -> list[Contact] | None:
        """Every person the account can message, in a stable order (by name on Slack; on WhatsApp by creation, so a
        new contact lands on the last page); None when the channel has no contact list here (yet). The caller
        filters and pages."""
        ...

    async def register_webhook(self, instance: Instance, webhook_url: str) -> bool:
        """Point the channel's webhook at `webhook_url` with the instance's webhook secret; False when the channel
        is not configured by API (raises as `check_account`)."""
        ...


class WithoutStructuredSends:
    """The reaction, location, contact and profile calls of a channel that has none of them (yet): each is refused
    for good, with the channel named, so the API answers 4xx rather than retrying something that cannot work."""

    channel: Channel

    def _unsupported(self, what: str) -> ChannelRejectedError:
        return ChannelRejectedError(f"{what} is not supported on {self.channel}", reason=REASON_NOT_SUPPORTED)

    async def send_reaction(self, instance: Instance, target: SendTarget, reaction: Reaction) -> str:
        raise self._unsupported("sending a reaction")

    async def send_location(self, instance: Instance, target: SendTarget, location: Location) -> str:
        raise self._unsupported("sending a location")

    async def send_contacts(self, instance: Instance, target: SendTarget, contacts: Sequence[ContactCard]) -> str:
        raise self._unsupported("sending contact cards")

    async def fetch_profile(self, instance: Instance, chat_id: str) -> Profile:
        raise self._unsupported("fetching a profile")


REASON_MEDIA_TOO_LARGE = "MEDIA_TOO_LARGE"
REASON_MEDIA_UNAVAILABLE = "MEDIA_UNAVAILABLE"


class MediaTooLargeError(ChannelRejectedError):
    """A received file is larger than the caller's cap: it was not (entirely) downloaded."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason=REASON_MEDIA_TOO_LARGE)


@dataclass(frozen=True)
class FetchedMedia:
    """The plaintext of a received message's file, downloaded from the channel."""

    data: bytes
    mime_type: str = ""
    filename: str = ""


@runtime_checkable
class MediaSource(Protocol):
    """What a sender that can download received files adds to `ChannelSender` (WhatsApp, whose webhooks may come
    without the bytes). Checked with isinstance, so other channels need not implement it."""

    async def fetch_media(
        self, instance: Instance, channel_message_id: str, chat_id: str, max_bytes: int
    ) -> FetchedMedia:
        """The file of the received message; raises `MediaTooLargeError` over `max_bytes`, `ChannelRejectedError`
        when the channel no longer has it, `ChannelTransientError` when it cannot be asked."""
        ...


def bot_token_of(instance: Instance, kind: type[DiscordConfig] | type[SlackConfig]) -> str:
    """The instance's bot token; a missing one (or an instance of another channel) is a configuration error."""
    config = instance.config
    if not isinstance(config, kind):
        raise ChannelRejectedError(
            f"instance {instance.name!r} is a {instance.channel} instance, not {kind.CHANNEL}",
            reason=REASON_MISCONFIGURED,
            status=400,
        )
    token = config.bot_token.strip()
    if not token:
        raise ChannelRejectedError(
            f"instance {instance.name!r} has no {kind.CHANNEL.value.title()} bot token",
            reason=REASON_MISCONFIGURED,
            status=400,
        )
    return token


def describe_error(exc: BaseException) -> str:
    """ "Type: message" of an exception whose message may be empty (timeouts often are)."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
