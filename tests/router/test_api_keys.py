"""Scoped API keys: the store on SQLite and PostgreSQL (hash stored, never the key), the core's rules, the RPCs."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
from omni.router.v1 import router_service_pb2

from servicekit.database import Database, migrate, open_database
from servicekit.errors import NotFoundError, PermissionDeniedError, UnauthenticatedError
from servicekit.instances import Instance, WhatsAppConfig
from servicekit.principals import Principal, acting_as
from services.router.api_key_store import ApiKeyRepository
from services.router.core.api_keys import ApiKeyService
from services.router.secret_box import SecretBox
from services.router.storage import MIGRATIONS, SCHEMA, InstanceRepository
from tests.router.conftest import Harness, whatsapp_instance


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_760_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Keys:
    db: Database
    instances: InstanceRepository
    service: ApiKeyService
    clock: Clock


def _instance(name: str, instance_id: str) -> Instance:
    config = WhatsAppConfig(evolution_url="http://evo.test", evolution_key="k", whatsapp_instance=name)
    return Instance(name=name, config=config, id=instance_id, created_at=1.0, updated_at=1.0)


@pytest.fixture
async def keys(db_url: str) -> AsyncIterator[Keys]:
    db = await open_database(db_url, SCHEMA)
    await migrate(db, MIGRATIONS, lock_key=SCHEMA)
    instances = InstanceRepository(db, SecretBox.generate())
    await instances.create(_instance("acme", "id-acme"))
    await instances.create(_instance("globex", "id-globex"))
    clock = Clock()
    try:
        yield Keys(db, instances, ApiKeyService(ApiKeyRepository(db), instances, clock=clock), clock)
    finally:
        await db.close()


async def test_a_key_is_shown_once_and_stored_only_as_its_hash(keys: Keys) -> None:
    record, key = await keys.service.create("acme")
    assert key.startswith("omni_sk_")
    assert len(key) >= 40
    assert record.prefix == key[:12]
    assert record.instance_name == "acme"
    assert record.instance_id == "id-acme"
    row = await keys.db.fetchrow("SELECT * FROM api_keys WHERE id = $1", record.id)
    assert row is not None
    stored = " ".join(str(row[column]) for column in row)
    assert key not in stored
    assert key[12:] not in stored
    assert row["key_hash"] == hashlib.sha256(key.encode()).hexdigest()


async def test_authenticate_resolves_the_key_to_its_instance(keys: Keys) -> None:
    record, key = await keys.service.create("acme")
    assert (await keys.service.authenticate(key)).id == record.id
    assert await keys.service.resolve(key) == Principal("scoped", instance_name="acme", key_id=record.id)
    for wrong in ["", "omni_sk_", key + "x", key[:-1], "change-me", "omni_sk_" + "a" * 300]:
        assert await keys.service.resolve(wrong) is None
        with pytest.raises(UnauthenticatedError):
            await keys.service.authenticate(wrong)


async def test_list_is_oldest_first_per_instance_and_revoke_stops_a_key(keys: Keys) -> None:
    first, first_key = await keys.service.create("acme")
    keys.clock.now += 1
    second, _ = await keys.service.create("acme")
    other, _ = await keys.service.create("globex")
    assert [k.id for k in await keys.service.list("acme")] == [first.id, second.id]
    assert [k.id for k in await keys.service.list("globex")] == [other.id]

    with pytest.raises(NotFoundError):
        await keys.service.revoke("globex", first.id)  # a key is revoked through its own instance only
    await keys.service.revoke("acme", first.id)
    assert [k.id for k in await keys.service.list("acme")] == [second.id]
    assert await keys.service.resolve(first_key) is None
    with pytest.raises(NotFoundError):
        await keys.service.revoke("acme", first.id)


async def test_keys_of_a_missing_instance_are_not_found(keys: Keys) -> None:
    with pytest.raises(NotFoundError):
        await keys.service.create("nobody")
    with pytest.raises(NotFoundError):
        await keys.service.list("nobody")


async def test_deleting_the_instance_deletes_its_keys(keys: Keys) -> None:
    _, key = await keys.service.create("acme")
    _, kept = await keys.service.create("globex")
    assert await keys.instances.delete("acme")
    assert await keys.db.fetchval("SELECT COUNT(*) FROM api_keys WHERE instance_name = 'acme'") == 0
    assert await keys.service.resolve(key) is None
    assert await keys.service.resolve(kept) is not None


async def test_a_key_never_reaches_a_new_instance_that_reuses_the_name(keys: Keys) -> None:
    """Even a row left behind (say, by a crash between statements) does not open the new tenant's data."""
    _, key = await keys.service.create("acme")
    await keys.db.execute("DELETE FROM instances WHERE name = 'acme'")
    await keys.instances.create(_instance("acme", "id-acme-2"))
    assert await keys.service.resolve(key) is None


async def test_last_used_at_is_written_at_most_once_a_minute(keys: Keys) -> None:
    record, key = await keys.service.create("acme")
    assert (await keys.service.list("acme"))[0].last_used_at == 0
    await keys.service.authenticate(key)
    first_use = keys.clock.now
    assert (await keys.service.list("acme"))[0].last_used_at == first_use
    keys.clock.now += 59
    await keys.service.authenticate(key)
    assert (await keys.service.list("acme"))[0].last_used_at == first_use
    keys.clock.now += 2
    await keys.service.authenticate(key)
    assert (await keys.service.list("acme"))[0].last_used_at == keys.clock.now
    assert record.id == (await keys.service.list("acme"))[0].id


async def test_a_scoped_caller_cannot_manage_keys_nor_resolve_them(keys: Keys) -> None:
    _, key = await keys.service.create("acme")
    with acting_as(Principal("scoped", instance_name="acme", key_id="k1")):
        for attempt in (keys.service.create("acme"), keys.service.list("acme"), keys.service.revoke("acme", "x")):
            with pytest.raises(PermissionDeniedError):
                await attempt
        with pytest.raises(PermissionDeniedError):
            await keys.service.authenticate_for_mesh(key)
    with acting_as(Principal("admin")):
        assert len(await keys.service.list("acme")) == 1


async def _status_of(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return caught.value.code()


async def test_the_rpcs_issue_list_authenticate_and_revoke(harness: Harness) -> None:
    stub = harness.stub
    await stub.CreateInstance(router_service_pb2.CreateInstanceRequest(instance=whatsapp_instance("http://a.test")))
    created = await stub.CreateApiKey(router_service_pb2.CreateApiKeyRequest(instance_name="acme"))
    assert created.key.startswith("omni_sk_")
    assert created.api_key.prefix == created.key[:12]
    assert created.api_key.instance_name == "acme"
    assert created.api_key.created_at.seconds > 0

    found = await stub.AuthenticateApiKey(router_service_pb2.AuthenticateApiKeyRequest(key=created.key))
    assert found.api_key.id == created.api_key.id
    assert found.api_key.instance_name == "acme"
    listed = await stub.ListApiKeys(router_service_pb2.ListApiKeysRequest(instance_name="acme"))
    assert [k.id for k in listed.api_keys] == [created.api_key.id]
    assert listed.api_keys[0].HasField("last_used_at")

    await stub.RevokeApiKey(router_service_pb2.RevokeApiKeyRequest(instance_name="acme", id=created.api_key.id))
    request = router_service_pb2.AuthenticateApiKeyRequest(key=created.key)
    assert await _status_of(stub.AuthenticateApiKey(request)) == grpc.StatusCode.UNAUTHENTICATED
    revoke = router_service_pb2.RevokeApiKeyRequest(instance_name="acme", id=created.api_key.id)
    assert await _status_of(stub.RevokeApiKey(revoke)) == grpc.StatusCode.NOT_FOUND
    missing = router_service_pb2.CreateApiKeyRequest(instance_name="nobody")
    assert await _status_of(stub.CreateApiKey(missing)) == grpc.StatusCode.NOT_FOUND
    listing = router_service_pb2.ListApiKeysRequest(instance_name="nobody")
    assert await _status_of(stub.ListApiKeys(listing)) == grpc.StatusCode.NOT_FOUND
