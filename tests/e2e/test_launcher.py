"""`make run`'s launcher: the whole mesh comes up healthy, a crashed service is back within 10 s, and SIGTERM
brings everything down within 15 s."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from launcher.local_mesh import REPO_ROOT
from tests.helpers.mesh import eventually, mesh_for_tests

pytestmark = pytest.mark.e2e


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_python_m_launcher_runs_and_stops_on_sigterm(tmp_path: Path) -> None:
    mesh = mesh_for_tests(tmp_path)  # only for its ports and environment
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "launcher", env=mesh.env, cwd=str(REPO_ROOT),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:

        async def healthy() -> bool:
            try:
                async with (
                    aiohttp.ClientSession() as session,
                    session.get(f"{mesh.base_url}/health", timeout=aiohttp.ClientTimeout(total=2)) as response,
                ):
                    return response.status == 200
            except aiohttp.ClientError:
                return False

        await eventually(healthy, timeout=60, every=0.3)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 15)
        assert time.monotonic() - started < 15
        assert process.returncode == 0
        with pytest.raises(aiohttp.ClientError):
            async with aiohttp.ClientSession() as session, session.get(f"{mesh.base_url}/health") as response:
                await response.read()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_killed_service_is_restarted_within_10_seconds(tmp_path: Path) -> None:
    mesh = mesh_for_tests(tmp_path)
    await mesh.start()
    try:
        for name in ("router", "ingress"):
            old = mesh.supervisor.pid(name)
            assert old is not None
            killed_at = time.monotonic()
            mesh.supervisor.kill(name, signal.SIGKILL)

            async def back(name: str = name, old: int = old) -> bool:
                pid = mesh.supervisor.pid(name)
                return pid is not None and pid != old and await mesh.supervisor.is_healthy(name)

            await eventually(back, timeout=10, every=0.1)
            assert time.monotonic() - killed_at < 10
            assert mesh.supervisor.restarts(name) == 1
        pids = [mesh.supervisor.pid(n) for n in ("gateway", "ingress", "router", "channels", "tracing")]
    finally:
        stop_started = time.monotonic()
        await mesh.stop()
        assert time.monotonic() - stop_started < 15
    assert not any(pid is not None and alive(pid) for pid in pids)
