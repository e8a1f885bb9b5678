"""The control plane: instance CRUD with validation, and the watch stream other services cache from."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncGenerator, Iterable
from typing import Any
from urllib.parse import urlsplit

from servicekit.errors import FieldViolation, InvalidArgumentError, NotFoundError
from servicekit.instance_names import NAME_PATTERN, RESERVED_NAMES
from services.router.core.broadcaster import InstanceBroadcaster
from services.router.core.models import CHANNELS, UPDATABLE_FIELDS, Instance, InstanceChange
from services.router.core.ports import Clock
from services.router.storage import InstanceRepository

DEFAULT_AGENT_TIMEOUT = 60
MAX_AGENT_TIMEOUT = 600
MAX_PAGE_SIZE = 500
DEFAULT_PAGE_SIZE = 100


def _is_http_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def validate(instance: Instance) -> Instance:
    """The instance with defaults applied; raises `InvalidArgumentError` listing every bad field."""
    violations: list[FieldViolation] = []
    if not NAME_PATTERN.fullmatch(instance.name):
        violations.append(FieldViolation("name", "must match ^[a-z0-9][a-z0-9_-]{0,62}$ (lower case)"))
    elif instance.name in RESERVED_NAMES:
        violations.append(FieldViolation("name", f"{instance.name!r} is reserved (it collides with an API route)"))
    if instance.channel not in CHANNELS:
        violations.append(FieldViolation("channel", "must be whatsapp, discord or slack"))
    if instance.agent_api_url and not _is_http_url(instance.agent_api_url):
        violations.append(FieldViolation("agent_api_url", "must be an http(s) URL"))
    if instance.evolution_url and not _is_http_url(instance.evolution_url):
        violations.append(FieldViolation("evolution_url", "must be an http(s) URL"))
    if instance.channel == "whatsapp":
        if not instance.evolution_url:
            violations.append(FieldViolation("evolution_url", "is required for a whatsapp instance"))
        if not instance.whatsapp_instance:
            violations.append(FieldViolation("whatsapp_instance", "is required for a whatsapp instance"))
    timeout = instance.agent_timeout_seconds or DEFAULT_AGENT_TIMEOUT
    if not 1 <= timeout <= MAX_AGENT_TIMEOUT:
        violations.append(FieldViolation("agent_timeout_seconds", f"must be between 1 and {MAX_AGENT_TIMEOUT}"))
    if violations:
        raise InvalidArgumentError("invalid instance", violations=violations)
    return dataclasses.replace(instance, agent_timeout_seconds=timeout)


class InstanceService:
    """Creates, reads, changes and deletes instances, and tells watchers about every change."""

    def __init__(
        self, repository: InstanceRepository, broadcaster: InstanceBroadcaster, *, clock: Clock = time.time
    ) -> None:
        self._repository = repository
        self._broadcaster = broadcaster
        self._clock = clock

    async def create(self, instance: Instance) -> Instance:
        now = self._clock()
        stored = dataclasses.replace(validate(instance), created_at=now, updated_at=now)
        await self._repository.create(stored)
        self._broadcaster.publish(InstanceChange("upserted", stored, stored.name))
        return stored

    async def get(self, name: str) -> Instance:
        instance = await self._repository.get(name)
        if instance is None:
            raise NotFoundError(f"instance {name!r} not found", reason="INSTANCE_NOT_FOUND")
        return instance

    async def list_page(self, *, page: int, page_size: int, channel: str = "") -> tuple[list[Instance], int]:
        page = max(page, 1)
        page_size = min(page_size if page_size > 0 else DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        return await self._repository.list_page(offset=(page - 1) * page_size, limit=page_size, channel=channel)

    async def update(self, changes: Instance, paths: Iterable[str]) -> Instance:
        """Apply the fields named in `paths` (FieldMask paths = Instance field names) from `changes`."""
        paths = list(paths)
        if not paths:
            raise InvalidArgumentError(
                "update_mask is required", violations=[FieldViolation("update_mask", "name the fields to change")]
            )
        unknown = [p for p in paths if p not in UPDATABLE_FIELDS]
        if unknown:
            raise InvalidArgumentError(
                "unknown or read-only fields in update_mask",
                violations=[FieldViolation("update_mask", f"{p!r} cannot be updated") for p in unknown],
            )
        current = await self.get(changes.name)
        values: dict[str, Any] = {path: getattr(changes, path) for path in paths}
        updated = validate(dataclasses.replace(current, **values))
        updated = dataclasses.replace(updated, updated_at=max(self._clock(), current.updated_at))
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
