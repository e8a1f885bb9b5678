"""Scoped API keys: issued for one instance, shown once, stored as a SHA-256 hash, resolved to a `Principal`.

A key is `omni_sk_` + 32 random bytes (url-safe base64). With that much entropy a fast hash is enough: nobody can
brute-force a 256-bit secret, so a slow password hash would only cost CPU on every request. Authentication is then
one lookup by hash; `last_used_at` is written at most once a minute per key so the hot path stays read-only.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid

from servicekit.errors import NotFoundError, PermissionDeniedError, UnauthenticatedError
from servicekit.principals import SCOPED_KEY_PREFIX, Principal, current_principal
from services.router.core.models import ApiKey
from services.router.core.ports import ApiKeyStore, Clock, InstanceStore

KEY_BYTES = 32
"""Random bytes in a key (256 bits)."""
PREFIX_LENGTH = 12
"""Characters of the key kept in clear (`omni_sk_` and 4 random ones), so an operator can tell keys apart."""
MAX_KEY_LENGTH = 256
"""Longer presented keys are refused without a lookup: no key we issue is that long."""
TOUCH_INTERVAL_SECONDS = 60.0
"""`last_used_at` is rewritten at most this often per key."""


def hash_key(key: str) -> str:
    """The stored form of a key: SHA-256, hex."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def new_key() -> str:
    """A fresh clear key."""
    return SCOPED_KEY_PREFIX + secrets.token_urlsafe(KEY_BYTES)


class ApiKeyService:
    """Issues, lists, revokes and authenticates the keys of instances."""

    def __init__(
        self,
        store: ApiKeyStore,
        instances: InstanceStore,
        *,
        clock: Clock = time.time,
        touch_interval: float = TOUCH_INTERVAL_SECONDS,
    ) -> None:
        self._store = store
        self._instances = instances
        self._clock = clock
        self._touch_interval = touch_interval

    async def _instance_id(self, instance_name: str) -> str:
        instance = await self._instances.get(instance_name)
        if instance is None:
            raise NotFoundError(f"instance {instance_name!r} not found", reason="INSTANCE_NOT_FOUND")
        return instance.id

    async def create(self, instance_name: str) -> tuple[ApiKey, str]:
        """Issue a key for the instance; returns its description and the clear key (never stored, never shown
        again). Raises `NotFoundError` for an unknown instance, `PermissionDeniedError` for a scoped caller."""
        current_principal().require_admin()
        instance_id = await self._instance_id(instance_name)
        key = new_key()
        record = ApiKey(
            id=str(uuid.uuid4()),
            instance_name=instance_name,
            instance_id=instance_id,
            prefix=key[:PREFIX_LENGTH],
            created_at=self._clock(),
        )
        await self._store.insert(record, hash_key(key))
        return record, key

    async def list(self, instance_name: str) -> list[ApiKey]:
        """The instance's keys, oldest first. Raises `NotFoundError` for an unknown instance, `PermissionDeniedError`
        for a scoped caller."""
        current_principal().require_admin()
        await self._instance_id(instance_name)
        return await self._store.list_for(instance_name)

    async def revoke(self, instance_name: str, key_id: str) -> None:
        """Delete one of the instance's keys. Raises `NotFoundError` when the instance has no such key,
        `PermissionDeniedError` for a scoped caller."""
        current_principal().require_admin()
        if not await self._store.delete(instance_name, key_id):
            raise NotFoundError(f"API key {key_id!r} not found", reason="API_KEY_NOT_FOUND")

    async def authenticate(self, key: str) -> ApiKey:
        """The key's description. Raises `UnauthenticatedError` for a key that is unknown, revoked, or issued for
        an instance that no longer exists (or whose name now belongs to a new instance)."""
        if not key.startswith(SCOPED_KEY_PREFIX) or len(key) > MAX_KEY_LENGTH:
            raise UnauthenticatedError("invalid API key", reason="API_KEY_INVALID")
        record = await self._store.by_hash(hash_key(key))
        if record is None:
            raise UnauthenticatedError("invalid API key", reason="API_KEY_INVALID")
        instance = await self._instances.get(record.instance_name)
        if instance is None or instance.id != record.instance_id:
            raise UnauthenticatedError("invalid API key", reason="API_KEY_INVALID")
        now = self._clock()
        if now - record.last_used_at >= self._touch_interval:
            await self._store.touch(record.id, now, older_than=now - self._touch_interval)
        return record

    async def authenticate_for_mesh(self, key: str) -> ApiKey:
        """`authenticate` for a mesh service only: anyone else could use it to test keys without being rate-limited
        by the service the key is for. Raises `PermissionDeniedError` for any other caller."""
        if current_principal().kind != "mesh":
            raise PermissionDeniedError("only mesh services may resolve API keys", reason="MESH_ONLY")
        return await self.authenticate(key)

    async def resolve(self, key: str) -> Principal | None:
        """The principal a presented key stands for, None when it is no valid scoped key (for the gRPC servers'
        own authentication of direct clients)."""
        try:
            record = await self.authenticate(key)
        except UnauthenticatedError:
            return None
        return Principal("scoped", instance_name=record.instance_name, key_id=record.id)
