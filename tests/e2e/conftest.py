"""The real mesh (launcher + processes), the Evolution simulator and the echo agent, shared per module."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from examples.agent_echo import EchoAgent
from launcher.local_mesh import LocalMesh
from simulators.evolution import EvolutionSimulator
from tests.helpers.databases import postgres_database
from tests.helpers.mesh import mesh_for_tests

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


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=["sqlite", "postgres"])
async def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    evolution = EvolutionSimulator()
    agent = EchoAgent(api_key=AGENT_KEY)
    await evolution.start()
    await agent.start()
    data_dir: Path = tmp_path_factory.mktemp(f"mesh-{request.param}")
    try:
        if request.param == "postgres":
            async with postgres_database() as url:
                mesh = mesh_for_tests(data_dir, database_url=url)
                await mesh.start()
                try:
                    yield World(mesh, evolution, agent, request.param)
                finally:
                    await mesh.stop()
        else:
            mesh = mesh_for_tests(data_dir)
            await mesh.start()
            try:
                yield World(mesh, evolution, agent, request.param)
            finally:
                await mesh.stop()
    finally:
        await agent.stop()
        await evolution.stop()
