"""`python -m simulators.discord` serves out of process (on uvloop) until SIGTERM, driven through `/__sim`."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import discord
import pytest
import yarl

ROOT = Path(__file__).resolve().parents[2]
BANNER = "discord simulator listening on "


@pytest.fixture
async def cli() -> AsyncIterator[str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "simulators.discord",
        "--port",
        "0",
        "--bot",
        "cli-token:cli-bot",
        "--guild",
        "acme:general,random",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 10)).decode().strip()
        assert line.startswith(BANNER)
        yield line.removeprefix(BANNER)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 10) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def sim_call(session: aiohttp.ClientSession, method: str, url: str, body: Any = None) -> Any:
    async with session.request(method, url, json=body) as response:
        assert response.status in (200, 201)
        return await response.json()


async def test_cli_serves_state_and_a_discord_py_client(cli: str, monkeypatch: pytest.MonkeyPatch) -> None:
    async with aiohttp.ClientSession() as session:
        state = await sim_call(session, "GET", f"{cli}/__sim/state")
        assert state["api_url"] == f"{cli}/api/v10"
        assert [b["name"] for b in state["bots"]] == ["cli-bot"]
        assert state["connected_bot_ids"] == []
        (guild,) = state["guilds"]
        assert sorted(guild["channel_ids"]) == ["general", "random"]

        monkeypatch.setattr(discord.http.Route, "BASE", state["api_url"])
        monkeypatch.setattr(discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(state["gateway_url"]))
        intents = discord.Intents.default()
        intents.message_content = True
        client = discord.Client(intents=intents, guild_ready_timeout=0.05, chunk_guilds_at_startup=False)
        ready, resumed = asyncio.Event(), asyncio.Event()

        @client.event
        async def on_ready() -> None:
            ready.set()

        @client.event
        async def on_resumed() -> None:
            resumed.set()

        @client.event
        async def on_message(message: discord.Message) -> None:
            if client.user is not None and message.author.id != client.user.id:
                await message.reply(f"echo: {message.content}")

        task = asyncio.create_task(client.start("cli-token"))
        try:
            await asyncio.wait_for(ready.wait(), 5)
            state = await sim_call(session, "GET", f"{cli}/__sim/state")
            assert state["connected_bot_ids"] == [state["bots"][0]["id"]]

            assert (await sim_call(session, "POST", f"{cli}/__sim/drop-connections", {})) == {"dropped": 1}
            await asyncio.wait_for(resumed.wait(), 5)

            alice = await sim_call(session, "POST", f"{cli}/__sim/users", {"name": "alice"})
            channel = guild["channel_ids"]["general"]
            body = {"channel_id": channel, "author_id": alice["id"], "content": "hello"}
            await sim_call(session, "POST", f"{cli}/__sim/messages", body)
            sent = await sim_call(session, "POST", f"{cli}/__sim/wait-sent", {"count": 1, "timeout": 5})
            assert [(s["content"], s["channel_id"]) for s in sent] == [("echo: hello", channel)]
            state = await sim_call(session, "GET", f"{cli}/__sim/state")
            assert state["bots"][0]["resume_count"] == 1
        finally:
            await client.close()
            await asyncio.wait_for(task, 5)
