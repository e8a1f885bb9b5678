"""The real mesh (launcher + processes), the Evolution simulator and the echo agent, shared per module."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from examples.agent_echo import EchoAgent
from launcher.local_mesh import LocalMesh
from simulators.discord import Bot, DiscordSimulator, Guild, User
from simulators.evolution import EvolutionSimulator
from tests.helpers.databases import postgres_database
from tests.helpers.discord import RecordingDiscordSimulator
from tests.helpers.mesh import eventually, mesh_for_tests

AGENT_KEY = "agent-secret-key"


@dataclass
class World:
    """Everything an end-to-end test talks to."""

    mesh: LocalMesh
    evolution: EvolutionSimulator
    agent: EchoAgent
    database: str

    async def new_instance(self, **overrides: object) -> str:
        """A fresh WhatsApp instance (own Evolution instance and token) pointing at the echo agent."""
        name = f"acme-{uuid.uuid4().hex[:8]}"
        token = self.evolution.add_instance(name)
        fields: dict[str, object] = {
            "name": name,
            "channel_type": "whatsapp",
            "evolution_url": self.evolution.url,
            "evolution_key": token,
            "whatsapp_instance": name,
            "agent_api_url": self.agent.url,
            "agent_api_key": AGENT_KEY,
            "default_agent": "echo",
            "agent_timeout": 10,
        }
        fields.update(overrides)
        await self.mesh.create_instance(**fields)
        return name


@contextlib.asynccontextmanager
async def running_mesh(
    data_dir: Path, database: str, *, extra_env: dict[str, str] | None = None
) -> AsyncIterator[LocalMesh]:
    """The started mesh on `database` ("sqlite", or a fresh PostgreSQL database dropped afterwards)."""
    async with contextlib.AsyncExitStack() as stack:
        url = await stack.enter_async_context(postgres_database()) if database == "postgres" else ""
        mesh = mesh_for_tests(data_dir, database_url=url, extra_env=extra_env)
        await mesh.start()
        try:
            yield mesh
        finally:
            await mesh.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=["sqlite", "postgres"])
async def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    evolution = EvolutionSimulator()
    agent = EchoAgent(api_key=AGENT_KEY)
    await evolution.start()
    await agent.start()
    data_dir: Path = tmp_path_factory.mktemp(f"mesh-{request.param}")
    try:
        async with running_mesh(data_dir, request.param) as mesh:
            yield World(mesh, evolution, agent, request.param)
    finally:
        await agent.stop()
        await evolution.stop()


# ---------------------------------------------------------------------- Discord

DISCORD_LEASE_SECONDS = 3.0
"""Bot lease of the Discord world's ingress replicas: a replica that stops renewing loses its bots this soon."""
DISCORD_RENEW_SECONDS = 0.3
"""How often the Discord world's replicas renew their bots' leases and report their status."""


def discord_mesh_env(discord: DiscordSimulator) -> dict[str, str]:
    """Settings pointing every process at the simulator, with short bot leases and no waiting for guilds."""
    return {
        "AUTOMAGIK_OMNI_DISCORD_API_URL": discord.api_url,
        "AUTOMAGIK_OMNI_DISCORD_GATEWAY_URL": discord.gateway_url,
        "AUTOMAGIK_OMNI_DISCORD_GUILD_READY_TIMEOUT_SECONDS": "0.1",
        "AUTOMAGIK_OMNI_INGRESS_BOT_LEASE_SECONDS": str(DISCORD_LEASE_SECONDS),
        "AUTOMAGIK_OMNI_INGRESS_BOT_RENEW_SECONDS": str(DISCORD_RENEW_SECONDS),
        # A SIGKILLed replica's claimed inbox rows go back to the others after this (not the default 30 s).
        "AUTOMAGIK_OMNI_INGRESS_LEASE_SECONDS": "5",
    }


@dataclass(frozen=True)
class Tenant:
    """One Discord instance of the hub: its bot, its guild (channels "general" and "random") and a user in it."""

    instance: str
    bot: Bot
    guild: Guild
    user: User

    @property
    def general(self) -> str:
        return self.guild.channel_ids["general"]

    @property
    def random(self) -> str:
        return self.guild.channel_ids["random"]


@dataclass
class DiscordWorld:
    """Everything a Discord end-to-end test talks to: the mesh, the Discord simulator and the echo agent."""

    mesh: LocalMesh
    discord: RecordingDiscordSimulator
    agent: EchoAgent
    database: str

    async def new_tenant(self, *, connect: bool = True, **overrides: object) -> Tenant:
        """A fresh bot in a fresh guild, and a Discord instance for it pointing at the echo agent; with `connect`,
        returned once the bot's gateway session is up and its status says connected."""
        suffix = uuid.uuid4().hex[:8]
        bot = self.discord.add_bot(f"omni-{suffix}")
        guild = self.discord.add_guild(f"guild-{suffix}", bots=[bot.id], channels=("general", "random"))
        user = self.discord.add_user(f"user-{suffix}")
        name = f"disc-{suffix}"
        fields: dict[str, object] = {
            "name": name,
            "channel_type": "discord",
            "discord_bot_token": bot.token,
            "discord_guild_id": guild.id,
            "agent_api_url": self.agent.url,
            "agent_api_key": AGENT_KEY,
            "default_agent": "echo",
            "agent_timeout": 10,
        }
        fields.update(overrides)
        await self.mesh.create_instance(**fields)
        tenant = Tenant(name, bot, guild, user)
        if connect:
            await self.connected(tenant)
        return tenant

    async def connected(self, tenant: Tenant, timeout: float = 20.0) -> dict[str, Any]:
        """The instance's status once its bot has one gateway session and reports itself connected."""

        async def probe() -> dict[str, Any] | None:
            if len(self.discord.sessions(tenant.bot.id)) != 1:
                return None
            code, body = await self.mesh.get_json(f"/api/v1/instances/{tenant.instance}/status")
            return body if code == 200 and body["status"] == "connected" else None

        return await eventually(probe, timeout=timeout)


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=["sqlite", "postgres"])
async def discord_world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[DiscordWorld]:
    discord = RecordingDiscordSimulator()
    agent = EchoAgent(api_key=AGENT_KEY)
    await discord.start()
    await agent.start()
    data_dir: Path = tmp_path_factory.mktemp(f"discord-mesh-{request.param}")
    env = discord_mesh_env(discord)
    try:
        async with running_mesh(data_dir, request.param, extra_env=env) as mesh:
            yield DiscordWorld(mesh, discord, agent, request.param)
    finally:
        await agent.stop()
        await discord.stop()
