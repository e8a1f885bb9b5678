"""The control plane: instance CRUD with validation, and the watch stream other services cache from."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncGenerator, Iterable
from typing import Any
from urllib.parse import urlsplit

from servicekit.channels import Channel
from servicekit.errors import AlreadyExistsError, FieldViolation, InvalidArgumentError, NotFoundError
from servicekit.instance_names import NAME_PATTERN, RESERVED_NAMES
from servicekit.instances import ChannelConfig, DiscordConfig, Instance, WhatsAppConfig
from services.router.core.broadcaster import InstanceBroadcaster
from services.router.core.models import INSTANCE_FIELDS, InstanceChange
from services.router.core.ports import AccountChecker, Clock, InstanceStore

DEFAULT_AGENT_TIMEOUT = 60
MAX_AGENT_TIMEOUT = 600
MAX_PAGE_SIZE = 500
DEFAULT_PAGE_SIZE = 100


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


def validate(instance: Instance) -> Instance:
    """The instance with defaults applied; raises `InvalidArgumentError` listing every bad field."""
    violations: list[FieldViolation] = []
    if not NAME_PATTERN.fullmatch(instance.name):
        violations.append(FieldViolation("name", "must match ^[a-z0-9][a-z0-9_-]{0,62}$ (lower case)"))
    elif instance.name in RESERVED_NAMES:
        violations.append(FieldViolation("name", f"{instance.name!r} is reserved (it collides with an API route)"))
    if instance.agent_api_url and not _is_http_url(instance.agent_api_url):
        violations.append(FieldViolation("agent_api_url", "must be an http(s) URL"))
    violations.extend(_channel_violations(instance.config))
    timeout = instance.agent_timeout_seconds or DEFAULT_AGENT_TIMEOUT
    if not 1 <= timeout <= MAX_AGENT_TIMEOUT:
        violations.append(FieldViolation("agent_timeout_seconds", f"must be between 1 and {MAX_AGENT_TIMEOUT}"))
    if violations:
        raise InvalidArgumentError("invalid instance", violations=violations)
    return dataclasses.replace(instance, agent_timeout_seconds=timeout)


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
        clock: Clock = time.time,
    ) -> None:
        self._repository = repository
        self._broadcaster = broadcaster
        self._accounts = accounts
        self._clock = clock

    async def create(self, instance: Instance) -> Instance:
        """Validate, ask the channel whether the account works (a token it refuses leaves no instance), store."""
        now = self._clock()
        stored = dataclasses.replace(validate(instance), created_at=now, updated_at=now)
        if await self._repository.get(stored.name) is not None:
            raise AlreadyExistsError(f"instance {stored.name!r} already exists", reason="INSTANCE_EXISTS")
        await self._accounts.check(stored)
        await self._repository.create(stored)
        self._broadcaster.publish(InstanceChange("upserted", stored, stored.name))
        return stored

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
        updated = validate(_apply(current, changes, paths))
        updated = dataclasses.replace(updated, updated_at=max(self._clock(), current.updated_at))
        if updated.config != current.config:
            await self._accounts.check(updated)
        if not await self._repository.update(updated):
            raise NotFoundError(f"instance {changes.name!r} not found", reason="INSTANCE_NOT_FOUND")
        self._broadcaster.publish(InstanceChange("upserted", updated, updated.name))
        return updated

    async def delete(self, name: str) -> None:
        if not await self._repository.delete(name):
            raise NotFoundError(f"instance {name!r} not found", reason="INSTANCE_NOT_FOUND")
        self._broadcaster.publish(InstanceChange("deleted", None, name))

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
