"""Master key rotation: several keys decrypt, the newest encrypts, the rotation command moves every stored secret to
the newest key, and a router whose keys cannot open what is stored refuses to start, naming the setting."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from servicekit.database import Database, migrate, open_database
from servicekit.errors import InternalError
from servicekit.instances import DiscordConfig, Instance, SlackConfig, WhatsAppConfig
from services.router.secret_box import SecretBox
from services.router.storage import MIGRATIONS, SCHEMA, InstanceRepository
from services.router.stored_secrets import (
    UnreadableSecretsError,
    check_stored_secrets,
    encrypted_columns,
    rotate_stored_secrets,
)

REPO = Path(__file__).resolve().parents[2]
K1 = Fernet.generate_key().decode()
K2 = Fernet.generate_key().decode()

INSTANCES = [
    Instance(
        name="acme",
        id="id-acme",
        config=WhatsAppConfig(
            evolution_url="http://evolution.invalid", evolution_key="evo-key-1", whatsapp_instance="acme"
        ),
        agent_api_key="agent-key-1",
        webhook_secret="webhook-secret-acme-0001",
        agent_signing_secret="whsec_c2lnbmluZy1zZWNyZXQtYWNtZQ==",
        created_at=1.0,
        updated_at=1.0,
    ),
    Instance(
        name="disco",
        id="id-disco",
        config=DiscordConfig(bot_token="discord-token-2", client_id="1", guild_id="2"),
        agent_api_key="agent-key-2",
        previous_webhook_secret="old-webhook-secret-0002",
        previous_webhook_secret_expires_at=9e9,
        created_at=2.0,
        updated_at=2.0,
    ),
    Instance(
        name="slacky",
        id="id-slacky",
        config=SlackConfig(bot_token="xoxb-3", signing_secret="signing-3"),
        created_at=3.0,
        updated_at=3.0,
    ),
]


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = await open_database(db_url, SCHEMA)
    await migrate(database, MIGRATIONS, lock_key=SCHEMA)
    try:
        yield database
    finally:
        await database.close()


async def store_under(db: Database, key: str) -> None:
    repository = InstanceRepository(db, SecretBox(key))
    for instance in INSTANCES:
        await repository.create(instance)


async def tokens(db: Database) -> dict[tuple[str, str], str]:
    columns = await encrypted_columns(db, "instances")
    rows = await db.fetch(f"SELECT name, {', '.join(columns)} FROM instances")
    return {(r["name"], c): str(r[c]) for r in rows for c in columns if r[c]}


def test_the_newest_key_encrypts_and_every_key_decrypts() -> None:
    old, new = SecretBox(K1), SecretBox([K2, K1])
    token = old.encrypt("s3cret")
    assert new.decrypt(token) == "s3cret"
    assert not new.is_current(token)
    fresh = new.encrypt("s3cret")
    assert SecretBox(K2).decrypt(fresh) == "s3cret"
    with pytest.raises(InternalError, match="AUTOMAGIK_OMNI_SECRET_KEYS"):
        old.decrypt(fresh)
    assert SecretBox(K2).decrypt(new.rotate(token)) == "s3cret"


def test_settings_list_newest_first_and_keep_a_lone_old_key(tmp_path: Path) -> None:
    box = SecretBox.from_settings(K1, tmp_path, production=True, secret_keys=f" {K2} ,")
    assert box.key_count == 2
    assert SecretBox(K2).decrypt(box.encrypt("x")) == "x"  # the list's first key encrypts
    assert box.decrypt(SecretBox(K1).encrypt("y")) == "y"  # SECRET_KEY still decrypts
    with pytest.raises(ValueError, match="key 2 is not a valid Fernet key"):
        SecretBox.from_settings("", tmp_path, production=True, secret_keys=f"{K2},nope")


def test_an_old_development_key_beside_the_databases_is_moved_apart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    old_key = Fernet.generate_key()
    (data / "secret.key").write_bytes(old_key)
    token = SecretBox(old_key).encrypt("kept")
    target = tmp_path / ".secrets" / "master.key"
    box = SecretBox.from_settings("", data, production=False, key_file=target)
    assert box.decrypt(token) == "kept"
    assert not (data / "secret.key").exists()
    assert target.read_bytes() == old_key
    assert oct(target.stat().st_mode & 0o777) == "0o600"


async def test_rotation_moves_every_secret_to_the_newest_key(db: Database) -> None:
    await store_under(db, K1)
    before = await tokens(db)
    assert len(before) == 8  # every secret column that holds something (4 + 3 + 1)

    report = await rotate_stored_secrets(db, SecretBox([K2, K1]))
    assert (report.rows, report.rewritten_rows) == (3, 3)
    assert report.rewritten_values == len(before)
    after = await tokens(db)
    assert after.keys() == before.keys()
    assert all(after[k] != before[k] for k in before)

    only_new = InstanceRepository(db, SecretBox(K2))
    assert await only_new.list_all() == sorted(INSTANCES, key=lambda i: i.name)
    again = await rotate_stored_secrets(db, SecretBox([K2, K1]))  # nothing left to do
    assert (again.rewritten_rows, again.current_values) == (0, len(before))
    with pytest.raises(UnreadableSecretsError):
        await check_stored_secrets(db, SecretBox(K1))


async def test_rotation_with_keys_that_cannot_open_the_data_changes_nothing(db: Database) -> None:
    await store_under(db, K1)
    before = await tokens(db)
    with pytest.raises(UnreadableSecretsError, match="AUTOMAGIK_OMNI_SECRET_KEYS") as raised:
        await rotate_stored_secrets(db, SecretBox(K2))
    assert "instances/acme.agent_api_key_enc" in str(raised.value)
    assert await tokens(db) == before


async def run_module(module: str, env: dict[str, str], cwd: Path) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO), **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode()


def command_env(db_url: str, keys: str) -> dict[str, str]:
    return {
        "AUTOMAGIK_OMNI_DATABASE_URL": db_url,
        "AUTOMAGIK_OMNI_SECRET_KEYS": keys,
        "AUTOMAGIK_OMNI_SECRET_KEY": "",
        "AUTOMAGIK_OMNI_MESH_TOKEN": "test-mesh-token-for-the-secret-tests",
        "AUTOMAGIK_OMNI_ROUTER_GRPC_PORT": "0",
        "AUTOMAGIK_OMNI_ENABLE_TRACING": "false",
        "ENVIRONMENT": "development",
    }


async def test_rotate_secrets_command_then_the_new_key_alone_reads_everything(
    db: Database, db_url: str, tmp_path: Path
) -> None:
    await store_under(db, K1)
    status, output = await run_module("services.router.rotate_secrets", command_env(db_url, f"{K2},{K1}"), tmp_path)
    assert status == 0, output
    assert "3 row(s) checked, 3 rewritten" in output
    assert await InstanceRepository(db, SecretBox(K2)).list_all() == sorted(INSTANCES, key=lambda i: i.name)


async def test_router_with_a_wrong_key_refuses_to_start_naming_the_setting(
    db: Database, db_url: str, tmp_path: Path
) -> None:
    await store_under(db, K1)
    status, output = await run_module("services.router", command_env(db_url, K2), tmp_path)
    assert status == 2, output
    assert "cannot start" in output
    assert "AUTOMAGIK_OMNI_SECRET_KEYS" in output
    assert "instances/acme" in output
