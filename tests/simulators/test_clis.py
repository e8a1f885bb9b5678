"""The command lines start, announce their URL on one line, serve, and stop cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("argv", "banner", "probe"),
    [
        (
            ["-m", "simulators.evolution", "--port", "0", "--api-key", "k", "--instance", "acme:tok"],
            "evolution simulator listening on ",
            ("GET", "/instance/connectionState/acme", {"apikey": "tok"}),
        ),
        (
            ["-m", "examples.agent_echo", "--port", "0", "--api-key", "k"],
            "echo agent listening on ",
            ("POST", "/api/agent/chat", {"x-api-key": "k"}),
        ),
    ],
)
async def test_cli_serves_until_sigterm(argv: list[str], banner: str, probe: tuple[str, str, dict[str, str]]) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, *argv, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 10)).decode().strip()
        assert line.startswith(banner)
        url = line.removeprefix(banner)
        method, path, headers = probe
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, url + path, json={"message": "hi"}, headers=headers) as response,
        ):
            assert response.status == 200
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 10) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
