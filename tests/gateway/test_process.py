"""`python -m gateway` for real: uvicorn on port 0, the lifespan's channels to the fake mesh, a clean SIGTERM."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import httpx

from gateway.app.mesh import MESH_SERVICES
from tests.gateway.conftest import API_KEY, FakeMesh
from tests.helpers.mesh_auth import TEST_MESH_TOKEN

REPO = Path(__file__).resolve().parents[2]


async def _read_port(stream: asyncio.StreamReader) -> int:
    while True:
        line = await stream.readline()
        if not line:
            raise AssertionError("gateway exited before listening")
        match = re.search(rb"Uvicorn running on http://127\.0\.0\.1:(\d+)", line)
        if match:
            return int(match.group(1))


async def test_gateway_process_serves_and_stops_on_sigterm(mesh: FakeMesh, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOMAGIK_OMNI_")}
    env.update(
        {
            "AUTOMAGIK_OMNI_API_KEY": API_KEY,
            "AUTOMAGIK_OMNI_MESH_TOKEN": TEST_MESH_TOKEN,
            "AUTOMAGIK_OMNI_API_HOST": "127.0.0.1",
            "AUTOMAGIK_OMNI_API_PORT": "0",
            "AUTOMAGIK_OMNI_ENABLE_TRACING": "false",
            "AUTOMAGIK_OMNI_SHUTDOWN_GRACE_SECONDS": "2",
            "PYTHONPATH": f"{REPO}:{REPO / 'gen' / 'python'}",
            **{f"AUTOMAGIK_OMNI_{name.upper()}_ADDRESS": mesh.address for name in MESH_SERVICES},
        }
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", cwd=tmp_path, env=env, stderr=asyncio.subprocess.PIPE
    )
    assert process.stderr is not None
    try:
        port = await asyncio.wait_for(_read_port(process.stderr), timeout=30)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            health = await client.get("/health")
            assert health.status_code == 200, health.text
            assert health.json()["status"] == "healthy"
            webhook = await client.post("/api/v1/webhook/evolution/acme", content=b'{"event":"messages.upsert"}')
            assert webhook.status_code == 200
            assert webhook.json()["status"] == "accepted"
            listed = await client.get("/api/v1/instances", headers={"x-api-key": API_KEY})
            assert listed.status_code == 200
        assert mesh.script.calls["ReceiveWebhook"][0].body == b'{"event":"messages.upsert"}'
    finally:
        process.send_signal(signal.SIGTERM)
        rest = await asyncio.wait_for(process.stderr.read(), timeout=15)
        code = await process.wait()
    # Uvicorn re-raises the signal after its graceful shutdown, so the exit status says "terminated by SIGTERM".
    assert code in (0, -signal.SIGTERM)
    assert b"Application shutdown complete" in rest
    assert b"Traceback" not in rest
