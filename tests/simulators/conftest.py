"""Fixtures for the simulator tests: a running Evolution simulator, an echo agent and a webhook receiver."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from examples.agent_echo import EchoAgent
from simulators.evolution import EvolutionSimulator

INSTANCE = "acme-support"
TOKEN = "B7E2D4A1-9C3F-4E6B-8D20-1F5A7C9E3B64"
GLOBAL_KEY = "sim-global-key"


def load_rest(fixtures: Path, name: str) -> dict[str, Any]:
    """One REST fixture: `{method, path, headers, request?, response: {status, body}}`."""
    loaded: dict[str, Any] = json.loads((fixtures / "rest" / f"{name}.json").read_text())
    return loaded


def shape(value: Any) -> Any:
    """The structure of a JSON value with the leaves replaced by their type names."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(item) for item in value]
    return type(value).__name__


@dataclass
class Receiver:
    """A local webhook endpoint recording every POST."""

    url: str = ""
    received: asyncio.Queue[tuple[str, dict[str, str], Any]] = field(default_factory=asyncio.Queue)
    status: int = 200

    async def next(self, timeout: float = 2.0) -> tuple[str, dict[str, str], Any]:
        """The next POST as (path, headers, json body)."""
        return await asyncio.wait_for(self.received.get(), timeout)


@pytest.fixture
async def simulator() -> AsyncIterator[EvolutionSimulator]:
    sim = EvolutionSimulator(api_key=GLOBAL_KEY)
    sim.add_instance(INSTANCE, TOKEN)
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


@pytest.fixture
async def agent() -> AsyncIterator[EchoAgent]:
    echo = EchoAgent()
    await echo.start()
    try:
        yield echo
    finally:
        await echo.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    state = Receiver()

    async def record(request: web.Request) -> web.Response:
        headers = {name.lower(): value for name, value in request.headers.items()}
        await state.received.put((request.path, headers, await request.json()))
        return web.Response(status=state.status)

    app = web.Application()
    app.router.add_post("/{tail:.*}", record)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    state.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield state
    finally:
        await runner.cleanup()
