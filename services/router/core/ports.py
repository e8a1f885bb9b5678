"""What the router core needs from the outside, as protocols (implemented by adapters and `storage`, faked in
tests): the channels service, the clock, and the instance, identity and route-record storage."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from servicekit.instances import Instance
from servicekit.messages import InboundMessage, Profile
from services.router.core.access import Decision
from services.router.core.models import ApiKey, ChannelAccount, OutgoingMessage, Person, RouteRecord

Clock = Callable[[], float]
"""Returns the current time in epoch seconds."""


class ChannelSender(Protocol):
    """The channels service as the router uses it."""

    async def send(self, message: OutgoingMessage) -> list[str]:
        """Send every part in order; returns the channel message ids.

        Raises `FailedPreconditionError` when the channel refused a part for good, `UnavailableError` (or
        `DeadlineExceededError`) when it failed transiently and the same key may be retried.
        """
        ...

    async def composing(self, instance_name: str, chat_id: str) -> None:
        """Best-effort typing indicator; never raises."""
        ...

    async def presence(self, instance_name: str, chat_id: str, presence: str, duration_ms: int) -> None:
        """Show `presence` (composing, recording, paused, available) for `duration_ms`, once; raises the channel's
        failure (`UnavailableError` with its reason), unlike `composing`: an API caller asked for it."""
        ...

    async def fetch_profile(self, instance_name: str, chat_id: str) -> Profile:
        """The person's public profile on the channel; raises `FailedPreconditionError` when the channel refuses,
        `UnavailableError` when it cannot be asked."""
        ...


class AccountChecker(Protocol):
    """The channels service's CheckAccount, as instance creation uses it."""

    async def check(self, instance: Instance) -> ChannelAccount:
        """The account the credentials belong to, once the channel accepted them (empty when it checks none);
        raise `InvalidArgumentError` with the channel's reason when it refuses them, `UnavailableError` when it
        cannot be asked."""
        ...

    async def register_webhook(self, instance: Instance, webhook_url: str) -> None:
        """Point the channel's webhook at `webhook_url` with the instance's webhook secret, where the channel is
        configured by API (Evolution); a channel that needs no registration does nothing. Raise as `check`."""
        ...


@dataclass(frozen=True)
class Provisioning:
    """What the channel gateway did when an instance was provisioned (ChannelsService.ProvisionInstance)."""

    provisioned: bool = False
    """False for a channel that needs no provisioning (its webhook, if any, is registered instead)."""
    created: bool = False
    """True when the gateway instance was created now: a failed store must delete it again."""
    instance_token: str = ""
    """The gateway instance's own token, kept with the instance (encrypted) and used for calls on it."""


class InstanceProvisioner(Protocol):
    """The channels service's ProvisionInstance and DeleteRemoteInstance, as instance CRUD uses them."""

    async def provision(self, instance: Instance, webhook_url: str) -> Provisioning:
        """Create the gateway instance with the hub's webhook, or point an existing one at the hub. Raise
        `InvalidArgumentError` (ACCOUNT_REJECTED) when the gateway refuses, `UnavailableError` when it cannot be
        asked; both name the gateway in their metadata."""
        ...

    async def delete_remote(self, instance_name: str) -> bool:
        """Delete the stored instance's gateway instance; False when it was already gone. Raise as `provision`."""
        ...


class InstancePurger(Protocol):
    """The other services' PurgeInstance, as instance deletion uses it: every service that keeps rows per instance
    (ingress, channels, tracing) deletes them, so a new instance of the same name inherits nothing."""

    async def purge(self, instance_name: str) -> int:
        """Delete the instance's data in every service; returns how many rows went. Raise `UnavailableError` naming
        the services that could not do it (what the others deleted stays deleted; a retry is safe)."""
        ...


class InstanceStore(Protocol):
    """Instances, secrets in clear on this side (`storage.InstanceRepository` encrypts them at rest)."""

    async def get(self, name: str) -> Instance | None:
        """The instance called `name`, None when there is none (the implementation may serve it from a short cache)."""
        ...

    async def create(self, instance: Instance) -> None: ...

    async def list_page(self, *, offset: int, limit: int, channel: str = "") -> tuple[list[Instance], int]:
        """One page ordered by name, and the total matching `channel` ("" for all)."""
        ...

    async def update(self, instance: Instance) -> bool: ...

    async def delete(self, name: str) -> bool: ...

    async def list_all(self) -> list[Instance]: ...


class IdentityStore(Protocol):
    """Users, their external ids and their sessions."""

    async def resolve_user(self, person: Person, now: float) -> str:
        """The user id of `person`, creating the user and recording any id not seen before."""
        ...

    async def resolve_session(
        self,
        instance_name: str,
        channel: str,
        chat_id: str,
        session_name: str,
        user_id: str,
        now: float,
        *,
        instance_id: str = "",
    ) -> str:
        """The session id of the chat, creating the session on its first message (the id derives from `instance_id`
        when given, else from the name)."""
        ...

    async def record_message(self, user_id: str, session_id: str, person: Person, now: float) -> None:
        """Count one message for the user and the session, and refresh the user's name and phone."""
        ...

    async def agent_ids(self, session_id: str) -> tuple[str, str]:
        """The (session id, user id) the agent returned in its last reply in the session ("" when none)."""
        ...

    async def store_agent_ids(self, session_id: str, agent_session_id: str, agent_user_id: str) -> None:
        """Remember the ids the agent returned, to send them back on the session's next turn."""
        ...


class AccessChecker(Protocol):
    """The access rules as RouteMessage asks them: from memory (`access_store.AccessRuleCache`), never per-message
    SQL."""

    def evaluate(self, instance: Instance, message: InboundMessage) -> Decision:
        """Whether `message` may reach the agent of `instance`, and the rule (if any) that decided."""
        ...


class RouteStore(Protocol):
    """The idempotency records of RouteMessage, one per inbound message id."""

    async def claim(self, record: RouteRecord, now: float) -> bool:
        """Insert the record of a new message; False when another attempt already did."""
        ...

    async def count_attempt(self, message_id: str, now: float) -> None: ...

    async def get(self, message_id: str) -> RouteRecord | None: ...

    async def store_reply(self, message_id: str, reply: dict[str, Any], now: float) -> dict[str, Any]:
        """Store the agent reply unless one is stored already; returns the stored one (the first wins)."""
        ...

    async def finish(
        self, message_id: str, outcome: str, error_message: str, sent_message_ids: list[str], now: float
    ) -> None:
        """Record the final outcome; later attempts return it without doing anything."""
        ...


class ApiKeyStore(Protocol):
    """Scoped API keys, stored by the SHA-256 of the key (never the key itself)."""

    async def insert(self, key: ApiKey, key_hash: str) -> None: ...

    async def by_hash(self, key_hash: str) -> ApiKey | None:
        """The key whose hash is `key_hash`, None when there is none."""
        ...

    async def list_for(self, instance_name: str) -> list[ApiKey]:
        """The instance's keys, oldest first."""
        ...

    async def delete(self, instance_name: str, key_id: str) -> bool:
        """Delete one of the instance's keys; False when it has no such key."""
        ...

    async def touch(self, key_id: str, now: float, *, older_than: float) -> None:
        """Set last_used_at to `now` unless it is already at or after `older_than` (concurrent callers write once)."""
        ...


@dataclass(frozen=True)
class MediaFile:
    """A received file's bytes, read back for the agent (from ingress's media store or from the channel)."""

    data: bytes
    mime_type: str = ""
    filename: str = ""


class StoredMedia(Protocol):
    """Ingress's GetMedia: the files it kept apart from the messages (`Media.blob_id`)."""

    async def get(self, instance_name: str, blob_id: str) -> MediaFile:
        """The file; raises `NotFoundError` when ingress no longer has it, another `OmniError` when it cannot say."""
        ...


class ChannelMedia(Protocol):
    """The channels service's FetchMedia: a received file downloaded again from the channel (WhatsApp)."""

    async def fetch(self, instance_name: str, channel_message_id: str, chat_id: str, max_bytes: int) -> MediaFile:
        """The file of the message, at most `max_bytes`; raises `FailedPreconditionError` when the channel no longer
        has it or it is over the cap, `UnavailableError` when the channel could not be asked."""
        ...
