"""Fixtures shared by every suite."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import discord
import pytest
import yarl

from simulators.discord import DiscordSimulator
from tests.helpers.databases import database_url
from tests.helpers.mesh_auth import TEST_MESH_TOKEN

# Every service's server refuses to run without the mesh credential; the in-process servers read it from here.
os.environ.setdefault("AUTOMAGIK_OMNI_MESH_TOKEN", TEST_MESH_TOKEN)

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "evolution"
"""The Evolution API wire-format fixtures (webhooks and REST answers), copied from the Evolution contract so the
suite stands alone on a user's clone."""


@pytest.fixture(params=["sqlite", "postgres"])
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh, empty database URL; every test using it runs once on SQLite and once on PostgreSQL."""
    async with database_url(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def evolution_fixtures() -> Path:
    """Directory of the Evolution webhook and REST fixtures."""
    return FIXTURES


@pytest.fixture
async def discord_sim(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[DiscordSimulator]:
    """The Discord simulator, with this process's discord.py pointed at it (REST and gateway) for the test."""
    simulator = DiscordSimulator()
    await simulator.start()
    monkeypatch.setattr(discord.http.Route, "BASE", simulator.api_url)
    monkeypatch.setattr(discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(simulator.gateway_url))
    try:
        yield simulator
    finally:
        await simulator.stop()
