"""Instance secrets are encrypted at rest under the master key, and the key is handled safely."""

from __future__ import annotations

import asyncio
import logging
import stat
from pathlib import Path

import pytest
from omni.router.v1 import router_service_pb2

from services.router.secret_box import SecretBox
from tests.router.conftest import AGENT_KEY, EVOLUTION_KEY, Harness, whatsapp_instance


async def test_secrets_are_encrypted_in_the_database(
    harness: Harness, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await harness.stub.CreateInstance(
        router_service_pb2.CreateInstanceRequest(instance=whatsapp_instance(harness.agent.url))
    )
    row = await harness.db.fetchrow("SELECT * FROM instances WHERE name = $1", "acme")
    assert row is not None
    stored = " ".join(str(value) for value in row.values())
    for secret in (AGENT_KEY, EVOLUTION_KEY):
        assert secret not in stored
        assert secret not in caplog.text
    assert row["agent_api_key_enc"].startswith("gAAAA")  # a Fernet token
    assert "agent_api_key" not in row  # no column may hold the clear value
    if db_url.startswith("sqlite:///"):
        await harness.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        raw = await asyncio.to_thread(Path(db_url.removeprefix("sqlite:///")).read_bytes)
        assert AGENT_KEY.encode() not in raw
        assert EVOLUTION_KEY.encode() not in raw


def test_development_key_is_generated_once_with_mode_0600_apart_from_the_data(tmp_path: Path) -> None:
    key_file = tmp_path / ".secrets" / "master.key"
    box = SecretBox.from_settings("", tmp_path / "data", production=False, key_file=key_file)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").iterdir())
    token = box.encrypt("s3cret")
    again = SecretBox.from_settings("", tmp_path / "data", production=False, key_file=key_file)
    assert again.decrypt(token) == "s3cret"


def test_production_requires_a_key(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="AUTOMAGIK_OMNI_SECRET_KEY"):
        SecretBox.from_settings("", tmp_path, production=True, key_file=tmp_path / "master.key")
    assert not (tmp_path / "master.key").exists()
    with pytest.raises(ValueError, match="Fernet"):
        SecretBox.from_settings("not-a-key", tmp_path, production=True)


def test_empty_secret_needs_no_token() -> None:
    box = SecretBox.generate()
    assert box.encrypt("") == ""
    assert box.decrypt("") == ""
