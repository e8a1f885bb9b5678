"""The control plane: instance CRUD with validation, and the watch stream other services cache from."""

from __future__ import annotations

import dataclasses
import logging
import secrets
import time
import uuid
from collections.abc import AsyncGenerator, Iterable
from typing import Any
from urllib.parse import urlsplit

from servicekit.address_guard import url_refusal
from servicekit.channels import Channel
from servicekit.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    FieldViolation,
    InvalidArgumentError,
    NotFoundError,
    OmniError,
)
from servicekit.instance_names import NAME_PATTERN, RESERVED_NAMES
from servicekit.instances import (
    ACCESS_MODES,
    ACCESS_OPEN,
    GROUP_REPLY_MENTION,
    GROUP_REPLY_MODES,
    WEBHOOK_AUTH_MODES,
    WEBHOOK_AUTH_NONE,
    WEBHOOK_AUTH_SECRET,
    ChannelConfig,
    DiscordConfig,
    Instance,
    SlackConfig,
    WhatsAppConfig,
)
from servicekit.standard_webhooks import new_signing_secret
from services.router.core.broadcaster import InstanceBroadcaster
from services.router.core.models import INSTANCE_FIELDS, ChannelAccount, InstanceChange
from services.router.core.ports import (
    AccountChecker,
    Clock,
    InstanceProvisioner,
    InstancePurger,
    InstanceStore,
    Provisioning,
)

log = logging.getLogger(__name__)

DEFAULT_AGENT_TIMEOUT = 60
MAX_AGENT_TIMEOUT = 600
MAX_AGENT_ATTEMPTS = 100
MAX_PAGE_SIZE = 500
DEFAULT_PAGE_SIZE = 100
WEBHOOK_SECRET_GRACE_SECONDS = 24 * 3600.0
"""How long a rotated-out webhook secret is still accepted (CONTRACT.md: 24 hours)."""


def new_instance_id() -> str:
    """A fresh immutable instance id."""
    return str(uuid.uuid4())


def _is_http_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _channel_violations(config: ChannelConfig) -> list[FieldViolation]:
    """What the channel's own fields lack; paths as in the update mask ("whatsapp.evolution_url")."""
    arm = config.CHANNEL.value
    violations: list[FieldViolation] = []
    if isinstance(config, WhatsAppConfig):
        if not config.evolution_url:
            violations.append(FieldViolation(f"{arm}.evolution_url", "is required for a whatsapp instance"))
        elif not _is_http_url(config.evolution_url):
            violations.append(FieldViolation(f"{arm}.evolution_url", "must be an http(s) URL"))
        if not config.whatsapp_instance:
            violations.append(FieldViolation(f"{arm}.whatsapp_instance", "is required for a whatsapp instance"))
    elif isinstance(config, DiscordConfig):
        if not config.bot_token:
            violations.append(FieldViolation(f"{arm}.bot_token", "is required for a discord instance"))
        for name in ("client_id", "guild_id"):
            value = getattr(config, name)
            if value and not value.isdigit():
                violations.append(FieldViolation(f"{arm}.{name}", "must be a Discord id (digits)"))
    else:
        if not config.bot_token.startswith("xoxb-"):
            violations.append(FieldViolation(f"{arm}.bot_token", "must be a Slack bot token (xoxb-...)"))
        if not config.signing_secret:
            violations.append(FieldViolation(f"{arm}.signing_secret", "is required for a slack instance"))
        if config.app_token and not config.app_token.startswith("xapp-"):
            violations.append(FieldViolation(f"{arm}.app_token", "must be a Slack app token (xapp-...)"))
    return violations


def _address_violations(instance: Instance, *, allow_link_local: bool) -> list[FieldViolation]:
    """Link-local and cloud-metadata hosts (`servicekit.address_guard`) the operator has not allowed."""
    urls = {"agent_api_url": instance.agent_api_url, "transcription_url": instance.transcription_url}
    if isinstance(instance.config, WhatsAppConfig):
        urls["whatsapp.evolution_url"] = instance.config.evolution_url
    return [
        FieldViolation(path, f"refused address: {reason}")
        for path, url in urls.items()
        if url and (reason := url_refusal(url, allow_link_local=allow_link_local))
    ]


def validate(instance: Instance, *, allow_link_local: bool = False) -> Instance:
    """The instance with defaults applied; raises `InvalidArgumentError` listing every bad field."""
    violations: list[FieldViolation] = []
    if not NAME_PATTERN.fullmatch(instance.name):
        violations.append(FieldViolation("name", "must match ^[a-z0-9][a-z0-9_-]{0,62}$ (lower case)"))
    elif instance.name in RESERVED_NAMES:
        violations.append(FieldViolation("name", f"{instance.name!r} is reserved (it collides with an API route)"))
    if instance.agent_api_url and not _is_http_url(instance.agent_api_url):
        violations.append(FieldViolation("agent_api_url", "must be an http(s) URL"))
    violations.extend(_address_violations(instance, allow_link_local=allow_link_local))
    violations.extend(_channel_violations(instance.config))
    timeout = instance.agent_timeout_seconds or DEFAULT_AGENT_TIMEOUT
    if not 1 <= timeout <= MAX_AGENT_TIMEOUT:
        violations.append(FieldViolation("agent_timeout_seconds", f"must be between 1 and {MAX_AGENT_TIMEOUT}"))
    violations.extend(_webhook_auth_violations(instance))
    group_reply = instance.group_reply or GROUP_REPLY_MENTION
    if group_reply not in GROUP_REPLY_MODES:
        violations.append(FieldViolation("group_reply", f"must be one of {', '.join(GROUP_REPLY_MODES)}"))
    if instance.transcription_url and not _is_http_url(instance.transcription_url):
        violations.append(FieldViolation("transcription_url", "must be an http(s) URL"))
    access_mode = instance.access_mode or ACCESS_OPEN
    if access_mode not in ACCESS_MODES:
        violations.append(FieldViolation("access_mode", f"must be one of {', '.join(ACCESS_MODES)}"))
    if not 0 <= instance.agent_max_attempts <= MAX_AGENT_ATTEMPTS:
        violations.append(FieldViolation("agent_max_attempts", f"must be between 0 and {MAX_AGENT_ATTEMPTS}"))
    if violations:
        raise InvalidArgumentError("invalid instance", violations=violations)
    return dataclasses.replace(
        instance, agent_timeout_seconds=timeout, group_reply=group_reply, access_mode=access_mode
    )


MIN_WEBHOOK_SECRET_LENGTH = 16


def _webhook_auth_violations(instance: Instance) -> list[FieldViolation]:
    if instance.webhook_auth not in WEBHOOK_AUTH_MODES:
        return [FieldViolation("webhook_auth", f"must be one of {', '.join(WEBHOOK_AUTH_MODES)}")]
    if instance.webhook_secret and len(instance.webhook_secret) < MIN_WEBHOOK_SECRET_LENGTH:
        return [FieldViolation("webhook_secret", f"must be at least {MIN_WEBHOOK_SECRET_LENGTH} characters")]
    return []


def _with_account(instance: Instance, account: ChannelAccount) -> Instance:
    """The instance with what its channel said about the account: a Slack bot's own user id (its posts come back as
    events and must be ignored) and its workspace."""
    if isinstance(instance.config, SlackConfig) and account.id:
        config = dataclasses.replace(
            instance.config, bot_user_id=account.id, team_id=account.workspace_id, team_name=account.workspace_name
        )
        return dataclasses.replace(instance, config=config)
    return instance


def _with_instance_token(instance: Instance, token: str) -> Instance:
    """The instance with its gateway instance token set (a WhatsApp instance only; others have none)."""
    if not isinstance(instance.config, WhatsAppConfig) or instance.config.instance_token == token:
        return instance
    return dataclasses.replace(instance, config=dataclasses.replace(instance.config, instance_token=token))


def _moved(current: Instance, updated: Instance) -> bool:
    """True when the instance now names another gateway instance (server or name), whose token it lacks."""
    before, after = current.config, updated.config
    if not isinstance(before, WhatsAppConfig) or not isinstance(after, WhatsAppConfig):
        return False
    return (before.evolution_url, before.whatsapp_instance) != (after.evolution_url, after.whatsapp_instance)


def new_webhook_secret() -> str:
    """A fresh webhook secret: 32 random bytes, URL-safe, so it fits a header and a query string alike."""
    return secrets.token_urlsafe(32)


def _apply(current: Instance, changes: Instance, paths: list[str]) -> Instance:
    """`current` with the fields named in `paths` taken from `changes`; raises for paths that cannot change."""
    violations: list[FieldViolation] = []
    top: dict[str, Any] = {}
    channel_fields: dict[str, Any] = {}
    config_names = {f.name for f in dataclasses.fields(current.config)}
    for path in paths:
        arm, dot, name = path.partition(".")
        if not dot:
            if path in INSTANCE_FIELDS:
                top[path] = getattr(changes, path)
            elif path == "channel":
                if changes.channel is not current.channel:
                    violations.append(FieldViolation(path, "the channel of an instance cannot change"))
            elif path in tuple(c.value for c in Channel):
                violations.append(FieldViolation(path, "name the channel's fields, e.g. discord.bot_token"))
            else:
                violations.append(FieldViolation("update_mask", f"{path!r} cannot be updated"))
        elif arm != current.channel.value:
            violations.append(FieldViolation(path, f"not a field of a {current.channel} instance"))
        elif name not in config_names:
            violations.append(FieldViolation("update_mask", f"{path!r} cannot be updated"))
        elif changes.channel is not current.channel:
            violations.append(FieldViolation(path, f"the update carries no {current.channel} settings"))
        else:
            channel_fields[name] = getattr(changes.config, name)
    if violations:
        raise InvalidArgumentError("unknown or read-only fields in update_mask", violations=violations)
    return dataclasses.replace(current, config=dataclasses.replace(current.config, **channel_fields), **top)


class InstanceService:
    """Creates, reads, changes and deletes instances, and tells watchers about every change."""

    def __init__(
        self,
        repository: InstanceStore,
        broadcaster: InstanceBroadcaster,
        accounts: AccountChecker,
        *,
        purger: InstancePurger,
        clock: Clock = time.time,
        webhook_base_url: str = "",
        production: bool = False,
        webhook_secret_grace_seconds: float = WEBHOOK_SECRET_GRACE_SECONDS,
        allow_link_local_urls: bool = False,
        provisioner: InstanceProvisioner | None = None,
    ) -> None:
        self._repository = repository
        self._provisioner = provisioner
        """Sets instances up on their channel gateway (Evolution); without it, only their webhook is registered."""
        self._broadcaster = broadcaster
        self._accounts = accounts
        self._purger = purger
        self._clock = clock
        self._webhook_base_url = webhook_base_url.rstrip("/")
        self._production = production
        self._grace = webhook_secret_grace_seconds
        self._allow_link_local_urls = allow_link_local_urls

    async def create(self, instance: Instance) -> Instance:
        """Validate, ask the channel whether the account works (a token it refuses leaves no instance), register the
        webhook with its secret where the channel is configured by API, store.

        The instance gets a fresh id, a webhook secret unless one is given (or webhook_auth is "none") and an agent
        signing secret; the caller shows both secrets once."""
        now = self._clock()
        stored = dataclasses.replace(
            validate(instance, allow_link_local=self._allow_link_local_urls),
            id=new_instance_id(),
            created_at=now,
            updated_at=now,
            agent_signing_secret=new_signing_secret(),
            previous_webhook_secret="",
            previous_webhook_secret_expires_at=0.0,
        )
        if stored.webhook_auth == WEBHOOK_AUTH_SECRET and not stored.webhook_secret:
            stored = dataclasses.replace(stored, webhook_secret=new_webhook_secret())
        self._refuse_open_webhooks_in_production(stored)
        if await self._repository.get(stored.name) is not None:
            raise AlreadyExistsError(f"instance {stored.name!r} already exists", reason="INSTANCE_EXISTS")
        stored = _with_account(stored, await self._accounts.check(stored))
        url = self._webhook_url(stored)
        if self._provisioner is None or not url:
            await self._register_webhook(stored)
            await self._repository.create(stored)
        else:
            stored = await self._create_provisioned(stored, self._provisioner, url)
        self._broadcaster.publish(InstanceChange("upserted", stored, stored.name))
        return stored

    async def _create_provisioned(self, instance: Instance, provisioner: InstanceProvisioner, url: str) -> Instance:
        """Store, then provision, then keep the token the gateway issued; whatever fails leaves nothing behind.

        The row is stored first: it claims the name before anything exists on the gateway, and the events a
        fresh gateway instance sends at once (its first QR) find their instance. It is announced to watchers only
        once provisioned. A refusal deletes the row again; a failure to keep the token deletes the gateway
        instance that was just created (best effort, logged), then the row."""
        await self._repository.create(instance)
        try:
            done = await provisioner.provision(instance, url)
            if not done.provisioned:
                await self._accounts.register_webhook(instance, url)
        except BaseException:
            await self._discard(instance.name)
            raise
        if not done.instance_token:
            return instance
        kept = _with_instance_token(instance, done.instance_token)
        try:
            if not await self._repository.update(kept):
                raise NotFoundError(f"instance {instance.name!r} vanished while created", reason="INSTANCE_NOT_FOUND")
        except BaseException:
            if done.created:
                await self._delete_remote_quietly(provisioner, instance.name)
            await self._discard(instance.name)
            raise
        return kept

    async def _discard(self, name: str) -> None:
        """Delete a row whose creation failed (best effort), and tell watchers that may have read it meanwhile."""
        try:
            await self._repository.delete(name)
        except Exception:
            log.exception("could not delete the half-created instance %s", name)
        self._broadcaster.publish(InstanceChange("deleted", None, name))

    @staticmethod
    async def _delete_remote_quietly(provisioner: InstanceProvisioner, name: str) -> None:
        try:
            await provisioner.delete_remote(name)
        except Exception:
            log.exception("could not delete the gateway instance of %s after a failed create; delete it by hand", name)

    async def get(self, name: str) -> Instance:
        instance = await self._repository.get(name)
        if instance is None:
            raise NotFoundError(f"instance {name!r} not found", reason="INSTANCE_NOT_FOUND")
        return instance

    async def list_page(
        self, *, page: int, page_size: int, channel: Channel | None = None
    ) -> tuple[list[Instance], int]:
        page = max(page, 1)
        page_size = min(page_size if page_size > 0 else DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        return await self._repository.list_page(
            offset=(page - 1) * page_size, limit=page_size, channel=channel.value if channel else ""
        )

    async def update(self, changes: Instance, paths: Iterable[str]) -> Instance:
        """Apply the fields named in `paths` (FieldMask paths = Instance field names) from `changes`."""
        paths = list(paths)
        if not paths:
            raise InvalidArgumentError(
                "update_mask is required", violations=[FieldViolation("update_mask", "name the fields to change")]
            )
        current = await self.get(changes.name)
        updated = validate(_apply(current, changes, paths), allow_link_local=self._allow_link_local_urls)
        updated = dataclasses.replace(updated, updated_at=max(self._clock(), current.updated_at))
        if updated.webhook_auth == WEBHOOK_AUTH_SECRET and not updated.webhook_secret:
            updated = dataclasses.replace(updated, webhook_secret=new_webhook_secret())
        self._refuse_open_webhooks_in_production(updated)
        if updated.config != current.config:
            updated = _with_account(updated, await self._accounts.check(updated))
        url = self._webhook_url(updated)
        if self._provisioner is not None and url:
            updated = await self._resync(current, updated, self._provisioner, url)
        elif (updated.config, updated.webhook_secret, updated.webhook_auth) != (
            current.config,
            current.webhook_secret,
            current.webhook_auth,
        ):
            await self._register_webhook(updated)
        if not await self._repository.update(updated):
            raise NotFoundError(f"instance {changes.name!r} not found", reason="INSTANCE_NOT_FOUND")
        self._broadcaster.publish(InstanceChange("upserted", updated, updated.name))
        return updated

    async def rotate_webhook_secret(self, name: str) -> tuple[str, float]:
        """Give the instance a new webhook secret, registered with the channel, and keep the replaced one valid for
        the grace period (24 h by default) so deliveries already configured with it keep working. Returns the new
        secret and when the old one stops being accepted."""
        current = await self.get(name)
        now = self._clock()
        rotated = dataclasses.replace(
            current,
            webhook_secret=new_webhook_secret(),
            previous_webhook_secret=current.webhook_secret,
            previous_webhook_secret_expires_at=now + self._grace if current.webhook_secret else 0.0,
            updated_at=max(now, current.updated_at),
        )
        # Stored (and watched) before the channel is told: a delivery signed with the new secret may follow the
        # registration at once, and must find it known. Should the registration fail, the old state comes back.
        await self._store_change(rotated)
        try:
            await self._register_webhook(rotated)
        except OmniError:
            await self._store_change(dataclasses.replace(current, updated_at=max(self._clock(), rotated.updated_at)))
            raise
        return rotated.webhook_secret, rotated.previous_webhook_secret_expires_at

    async def rotate_agent_signing_secret(self, name: str) -> str:
        """Give the instance a new agent signing secret; agent calls are signed with it from now on."""
        current = await self.get(name)
        rotated = dataclasses.replace(
            current, agent_signing_secret=new_signing_secret(), updated_at=max(self._clock(), current.updated_at)
        )
        await self._store_change(rotated)
        return rotated.agent_signing_secret

    async def _store_change(self, instance: Instance) -> None:
        if not await self._repository.update(instance):
            raise NotFoundError(f"instance {instance.name!r} not found", reason="INSTANCE_NOT_FOUND")
        self._broadcaster.publish(InstanceChange("upserted", instance, instance.name))

    def _refuse_open_webhooks_in_production(self, instance: Instance) -> None:
        if self._production and instance.webhook_auth == WEBHOOK_AUTH_NONE:
            raise InvalidArgumentError(
                "unauthenticated webhooks are refused in production",
                violations=[FieldViolation("webhook_auth", '"none" is for local trials only (ENVIRONMENT=production)')],
            )

    async def _resync(
        self, current: Instance, updated: Instance, provisioner: InstanceProvisioner, url: str
    ) -> Instance:
        """Provision again when something the gateway holds changed (where the instance lives, its credentials, the
        webhook secret or auth, the group setting behind Evolution's groupsIgnore). An instance moved to another
        gateway instance drops the old one's token first: it opens nothing there."""
        watched = ("config", "webhook_secret", "webhook_auth", "group_reply")
        if all(getattr(updated, field) == getattr(current, field) for field in watched):
            return updated
        if _moved(current, updated):
            updated = _with_instance_token(updated, "")
        done: Provisioning = await provisioner.provision(updated, url)
        if not done.provisioned:
            await self._accounts.register_webhook(updated, url)
        return _with_instance_token(updated, done.instance_token) if done.instance_token else updated

    def _webhook_url(self, instance: Instance) -> str:
        """Where the channel must post the instance's webhooks; empty when the hub's public URL is not known or the
        channel has no webhook route."""
        segment = instance.traits.webhook_segment
        if self._webhook_base_url and segment:
            return f"{self._webhook_base_url}/api/v1/webhook/{segment}/{instance.name}"
        return ""

    async def _register_webhook(self, instance: Instance) -> None:
        """Tell the channel where to post and with which secret (Evolution's webhook/set), when the hub's public URL
        is known and the channel has a webhook route."""
        url = self._webhook_url(instance)
        if url:
            await self._accounts.register_webhook(instance, url)

    async def delete(self, name: str, *, delete_remote: bool = False) -> None:
        """Delete the instance and everything every service keeps for it.

        With `delete_remote`, the gateway instance (Evolution's) goes first: when the gateway refuses or cannot be
        reached, this raises and the instance stays, so nothing is half deleted and the call can be retried.
        The other services purge next: when one cannot, this raises UNAVAILABLE and the instance stays, so the
        delete can simply be retried (a purge is idempotent), never leaving data behind a name that is free again.
        They purge once more after the row is gone, best effort, for a message accepted in between."""
        await self.get(name)
        if delete_remote:
            if self._provisioner is None:
                raise FailedPreconditionError(
                    "this hub cannot delete gateway instances", reason="REMOTE_DELETE_NOT_SUPPORTED"
                )
            await self._provisioner.delete_remote(name)
        await self._purger.purge(name)
        if not await self._repository.delete(name):
            raise NotFoundError(f"instance {name!r} not found", reason="INSTANCE_NOT_FOUND")
        self._broadcaster.publish(InstanceChange("deleted", None, name))
        try:
            await self._purger.purge(name)
        except OmniError as exc:
            log.warning("second purge of deleted instance %s failed: %s", name, exc.message)

    async def watch(self) -> AsyncGenerator[InstanceChange, None]:
        """Every instance (snapshot), then snapshot_done, then each change, until the caller stops iterating.

        The subscription starts before the snapshot is read, so a change made meanwhile is delivered (possibly
        twice, which a cache absorbs) rather than lost.
        """
        with self._broadcaster.subscribe() as subscription:
            for instance in await self._repository.list_all():
                yield InstanceChange("snapshot", instance, instance.name)
            yield InstanceChange("snapshot_done")
            while True:
                yield await subscription.next()
