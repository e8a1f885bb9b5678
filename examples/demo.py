"""`make demo`: one WhatsApp message through the whole mesh, printed with its reply and trace.

Starts the Evolution API simulator and the echo agent in this process, the mesh (four services + gateway) as child
processes on free ports with a throw-away SQLite directory, creates an instance over REST, posts one
`messages.upsert` webhook the way Evolution does, waits for the reply to reach the simulator and prints the trace.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import sys
import time
from typing import Any

import aiohttp

from examples.agent_echo import EchoAgent
from launcher.local_mesh import REPO_ROOT, LocalMesh
from servicekit.runner import run
from simulators.evolution import EvolutionSimulator, post_webhook, text_upsert

CHAT = "5521991234567@s.whatsapp.net"


def show(title: str, value: Any) -> None:
    print(f"\n== {title}")
    print(value if isinstance(value, str) else json.dumps(value, indent=2, ensure_ascii=False))


async def main() -> None:
    data_dir = REPO_ROOT / "data" / "demo"
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    evolution = EvolutionSimulator()
    agent = EchoAgent(api_key="demo-agent-key")
    await evolution.start()
    await agent.start()
    token = evolution.add_instance("demo")
    mesh = LocalMesh(data_dir, api_key=secrets.token_urlsafe(16), log_level="WARNING")
    print("starting the mesh (tracing, router, channels, ingress, gateway)...")
    await mesh.start()
    try:
        instance = await mesh.create_instance(
            name="demo",
            channel_type="whatsapp",
            evolution_url=evolution.url,
            evolution_key=token,
            whatsapp_instance="demo",
            agent_api_url=agent.url,
            agent_api_key="demo-agent-key",
            default_agent="echo",
        )
        show("instance created (secrets masked)", instance)
        envelope = text_upsert("demo", CHAT, "Oi! Vocês abrem amanhã?")
        started = time.perf_counter()
        async with aiohttp.ClientSession() as session:
            status = await post_webhook(session, mesh.webhook_url("demo"), envelope)
        ack_ms = (time.perf_counter() - started) * 1000
        show(f"webhook answered HTTP {status} in {ack_ms:.1f} ms", envelope["data"]["key"])
        try:
            await evolution.wait_for_sent(1, timeout=20)
        except TimeoutError:
            print("no reply within 20 s", file=sys.stderr)
            raise SystemExit(1) from None
        reply_ms = (time.perf_counter() - started) * 1000
        sent = evolution.sent[0]
        show(
            f"reply sent through Evolution sendText {reply_ms:.1f} ms after the webhook",
            {"number": sent.number, "text": sent.text},
        )
        trace: dict[str, Any] = {}
        for _ in range(100):
            code, listing = await mesh.get_json("/api/v1/traces", instance_name="demo")
            if code == 200 and listing["traces"] and listing["traces"][0]["status"] == "sent":
                code, trace = await mesh.get_json(f"/api/v1/traces/{listing['traces'][0]['trace_id']}")
                break
            await asyncio.sleep(0.1)
        spans = [f"{s['name']:<58} {s['duration_ms']:9.2f} ms" for s in trace.get("spans", [])]
        show("trace (GET /api/v1/traces/{trace_id})", {k: v for k, v in trace.items() if k != "spans"})
        show("spans", "\n".join(spans))
    finally:
        await mesh.stop()
        await agent.stop()
        await evolution.stop()


if __name__ == "__main__":
    run(main())
