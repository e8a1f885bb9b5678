"""`make demo`: a WhatsApp, a Discord and a Slack message through the whole mesh, printed with replies and traces.

Starts the echo agent, the Evolution API simulator and the Discord simulator in this process, the mesh (four
services + gateway) as child processes on free ports with a throw-away SQLite directory, then:
- WhatsApp: creates an instance over REST, which provisions the Evolution instance (webhook, secret header,
  events), connects it (a QR is shown, the simulated phone scans it, the connection webhook turns the status to
  connected), posts one `messages.upsert` webhook the way Evolution does, waits for the reply to reach the
  simulator and prints the trace;
- Discord: creates an instance with a bot token (ingress logs the bot into the simulated gateway, as into
  Discord), a user sends the bot a direct message and then mentions it in a guild channel; it prints the bot's
  replies as the simulator recorded them and the DM's trace.

- Slack: creates an instance with a bot token and signing secret (checked with auth.test), points the simulated
  app's Events API Request URL at it; a user sends a DM and then mentions the app in a channel; it prints the
  replies posted in the user's thread and the trace.

`python -m examples.demo --channel whatsapp` (or `discord`, `slack`) runs one of them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import shutil
import sys
import time
from collections.abc import Awaitable
from typing import Any

import aiohttp

from examples.agent_echo import EchoAgent
from launcher.local_mesh import REPO_ROOT, LocalMesh
from servicekit.runner import run
from simulators.discord import DiscordSimulator
from simulators.evolution import EvolutionSimulator, post_webhook, text_upsert
from simulators.slack import SlackSimulator

CHAT = "5521991234567@s.whatsapp.net"
AGENT_KEY = "demo-agent-key"


def show(title: str, value: Any) -> None:
    print(f"\n== {title}")
    print(value if isinstance(value, str) else json.dumps(value, indent=2, ensure_ascii=False))


def fail(reason: str) -> None:
    print(reason, file=sys.stderr)
    raise SystemExit(1)


async def show_trace(mesh: LocalMesh, instance: str, traces: int = 1) -> None:
    """Print the oldest of the instance's traces once all `traces` are sent and its spans arrived (spans reach
    the tracing service in batches, from each process on its own)."""
    trace: dict[str, Any] = {}
    for _ in range(100):
        code, listing = await mesh.get_json("/api/v1/traces", instance_name=instance)
        # Only answered messages: Slack also delivers the app's own replies back as events, traced as ignored.
        found = [t for t in listing["traces"] if t["status"] == "sent"] if code == 200 else []
        if len(found) >= traces:
            code, trace = await mesh.get_json(f"/api/v1/traces/{found[-1]['trace_id']}")
            if {"ingress.accept", "channels.send"} <= {s["name"] for s in trace.get("spans", [])}:
                break
        await asyncio.sleep(0.1)
    spans = [f"{s['name']:<58} {s['duration_ms']:9.2f} ms" for s in trace.get("spans", [])]
    show("trace (GET /api/v1/traces/{trace_id})", {k: v for k, v in trace.items() if k != "spans"})
    show("spans", "\n".join(spans))


async def delivery_status(mesh: LocalMesh, instance: str, wanted: str) -> dict[str, Any]:
    """The receipts on the instance's first trace once its delivery status is `wanted` (receipt spans reach the
    tracing service in batches, like every span)."""
    trace: dict[str, Any] = {}
    for _ in range(100):
        _, listing = await mesh.get_json("/api/v1/traces", instance_name=instance)
        if listing.get("traces"):
            _, trace = await mesh.get_json(f"/api/v1/traces/{listing['traces'][-1]['trace_id']}")
            if trace.get("delivery_status") == wanted:
                break
        await asyncio.sleep(0.1)
    receipts = [s for s in trace.get("spans", []) if "receipt" in s["name"]]
    return {
        "delivery_status": trace.get("delivery_status"),
        "receipt spans": [{"name": s["name"], "attributes": s.get("attributes", {})} for s in receipts],
    }


async def whatsapp_demo(mesh: LocalMesh, evolution: EvolutionSimulator, agent: EchoAgent) -> None:
    # Omni provisions the Evolution instance itself (instance/create with its webhook, secret header and events):
    # nothing is pasted into Evolution by hand.
    instance = await mesh.create_instance(
        name="demo",
        channel_type="whatsapp",
        evolution_url=evolution.url,
        evolution_key=evolution.api_key,
        whatsapp_instance="demo-wa",
        agent_api_url=agent.url,
        agent_api_key=AGENT_KEY,
        default_agent="echo",
    )
    show("instance created (secrets masked)", instance)
    hook = evolution.webhook_of("demo-wa") or {}
    show(
        "Evolution instance 'demo-wa' created by Omni, its webhook set",
        {"url": hook.get("url"), "headers": sorted(hook.get("headers") or {}), "events": hook.get("events")},
    )
    async with mesh.client.post("/api/v1/instances/demo/connect") as response:
        connect = await response.json()
    qr = connect.get("qr_code") or ""
    show(
        f"POST /api/v1/instances/demo/connect -> HTTP {response.status}",
        {"status": connect.get("status"), "qr_code": f"{qr[:40]}... ({len(qr)} base64 characters)" if qr else None},
    )
    evolution.scan_qr("demo-wa", owner_jid="5511987650000@s.whatsapp.net", profile_name="Demo Store")
    connection: dict[str, Any] = {}
    for _ in range(100):
        _, connection = await mesh.get_json("/api/v1/instances/demo/status")
        if connection.get("status") == "connected":
            break
        await asyncio.sleep(0.1)
    show("the phone scanned the QR: connection.update reached /status (GET /api/v1/instances/demo/status)", connection)
    if connection.get("status") != "connected":
        fail("the instance did not connect")
    envelope = text_upsert("demo-wa", CHAT, "Oi! Vocês abrem amanhã?")
    started = time.perf_counter()
    async with aiohttp.ClientSession() as session:
        status = await post_webhook(session, mesh.webhook_url("demo"), envelope)
    ack_ms = (time.perf_counter() - started) * 1000
    show(f"webhook answered HTTP {status} in {ack_ms:.1f} ms", envelope["data"]["key"])
    try:
        await evolution.wait_for_sent(1, timeout=20)
    except TimeoutError:
        fail("no reply within 20 s")
    reply_ms = (time.perf_counter() - started) * 1000
    sent = evolution.sent[0]
    show(
        f"reply sent through Evolution sendText {reply_ms:.1f} ms after the webhook",
        {"number": sent.number, "text": sent.text},
    )
    statuses = await evolution.deliver_receipts(sent.key_id, ("DELIVERY_ACK", "READ"))
    await show_trace(mesh, "demo")
    delivery = await delivery_status(mesh, "demo", "read")
    show(f"the phone reported the reply delivered and read (messages.update webhooks: HTTP {statuses})", delivery)


async def discord_demo(mesh: LocalMesh, discord: DiscordSimulator, agent: EchoAgent) -> None:
    bot = discord.add_bot("omni-demo-bot")
    alice = discord.add_user("alice")
    guild = discord.add_guild("Demo Guild", bots=[bot.id], channels=["general"])
    await mesh.create_instance(
        name="demo-discord",
        channel_type="discord",
        discord_bot_token=bot.token,
        agent_api_url=agent.url,
        agent_api_key=AGENT_KEY,
        default_agent="echo",
    )
    status: dict[str, Any] = {}
    for _ in range(200):
        _, status = await mesh.get_json("/api/v1/instances/demo-discord/status")
        if status.get("status") == "connected":
            break
        await asyncio.sleep(0.1)
    else:
        fail(f"the bot did not connect within 20 s: {status}")
    show(
        "instance demo-discord created; its bot logged into the (simulated) Discord gateway "
        "(GET /api/v1/instances/demo-discord/status)",
        {k: status.get(k) for k in ("status", "account_name", "account_id", "guilds")},
    )

    async def exchange(title: str, post: Awaitable[dict[str, Any]], count: int) -> None:
        """Post a user's message, wait for the bot's reply and print both."""
        started = time.perf_counter()
        message = await post
        try:
            await discord.wait_for_sent(count, timeout=20)
        except TimeoutError:
            fail("no reply within 20 s")
        reply_ms = (time.perf_counter() - started) * 1000
        reply = discord.sent[count - 1]
        show(title, {"channel_id": message["channel_id"], "id": message["id"], "content": message["content"]})
        show(
            f"the bot's reply, as the Discord simulator recorded it, {reply_ms:.1f} ms later",
            {
                "channel_id": reply.channel_id,
                "id": reply.id,
                "content": reply.content,
                "replying_to": reply.message_reference,
                "guild_id": reply.guild_id,
            },
        )

    await exchange("alice sends the bot a direct message", discord.send_dm(bot.id, alice.id, "Hi! Open tomorrow?"), 1)
    general = guild.channel_ids["general"]
    mention = discord.post_message(general, alice.id, f"<@{bot.id}> what's on the menu?", mentions=[bot.id])
    await exchange("alice mentions the bot in #general of Demo Guild", mention, 2)
    await show_trace(mesh, "demo-discord", traces=2)


async def slack_demo(mesh: LocalMesh, slack: SlackSimulator, agent: EchoAgent) -> None:
    team = slack.add_team(name="Demo Workspace")
    bot = slack.add_bot(team.id, "omni-demo-app")
    alice = slack.add_user(team.id, "alice")
    general = slack.add_channel(team.id, "general")
    instance = await mesh.create_instance(
        name="demo-slack",
        channel_type="slack",
        slack_bot_token=bot.token,
        slack_signing_secret=bot.signing_secret,
        agent_api_url=agent.url,
        agent_api_key=AGENT_KEY,
        default_agent="echo",
    )
    slack.set_request_url(bot, instance["webhook_url"])
    show(
        "instance demo-slack created; its token checked with auth.test, the Events API Request URL to paste in Slack",
        {k: instance.get(k) for k in ("slack_bot_user_id", "slack_team_id", "slack_team_name", "webhook_url")},
    )

    async def exchange(title: str, channel: str, text: str) -> None:
        started = time.perf_counter()
        message, deliveries = await slack.post_user_message(channel, alice.id, text)
        acks = ", ".join(f"{d.event_type} HTTP {d.status}" for d in deliveries)
        show(f"{title} (Slack signed and POSTed: {acks})", {"channel": channel, "ts": message["ts"], "text": text})
        for _ in range(200):
            replies = [p for p in slack.posts if p.thread_ts == message["ts"]]
            if replies:
                break
            await asyncio.sleep(0.1)
        else:
            fail("no reply within 20 s")
        reply_ms = (time.perf_counter() - started) * 1000
        show(
            f"the app's reply in the user's thread (chat.postMessage), {reply_ms:.1f} ms later",
            {"channel": replies[0].channel, "thread_ts": replies[0].thread_ts, "text": replies[0].text},
        )

    await exchange("alice sends the app a direct message", slack.open_dm(bot, alice.id).id, "Hi! Open tomorrow?")
    await exchange("alice mentions the app in #general", general.id, f"<@{bot.user_id}> what's on the menu?")
    await show_trace(mesh, "demo-slack", traces=2)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--channel", choices=("all", "whatsapp", "discord", "slack"), default="all")
    args = parser.parse_args()
    data_dir = REPO_ROOT / "data" / "demo"
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    evolution = EvolutionSimulator()
    discord = DiscordSimulator()
    slack = SlackSimulator()
    agent = EchoAgent(api_key=AGENT_KEY)
    await evolution.start()
    await discord.start()
    await slack.start()
    await agent.start()
    discord_env = {
        "AUTOMAGIK_OMNI_DISCORD_API_URL": discord.api_url,
        "AUTOMAGIK_OMNI_DISCORD_GATEWAY_URL": discord.gateway_url,
        # A bot waits this long for its guilds after READY before it calls itself ready (2 s by default).
        "AUTOMAGIK_OMNI_DISCORD_GUILD_READY_TIMEOUT_SECONDS": "0.1",
        "AUTOMAGIK_OMNI_SLACK_API_URL": slack.api_url,
    }
    mesh = LocalMesh(data_dir, api_key=secrets.token_urlsafe(16), log_level="WARNING", extra_env=discord_env)
    print("starting the mesh (tracing, router, channels, ingress, gateway)...")
    await mesh.start()
    try:
        if args.channel in ("all", "whatsapp"):
            print("\n######## WhatsApp (Evolution API simulator)")
            await whatsapp_demo(mesh, evolution, agent)
        if args.channel in ("all", "discord"):
            print("\n######## Discord (Discord simulator: REST API + gateway)")
            await discord_demo(mesh, discord, agent)
        if args.channel in ("all", "slack"):
            print("\n######## Slack (Slack simulator: Events API + Web API)")
            await slack_demo(mesh, slack, agent)
    finally:
        await mesh.stop()
        await agent.stop()
        await discord.stop()
        await slack.stop()
        await evolution.stop()


if __name__ == "__main__":
    run(main())
