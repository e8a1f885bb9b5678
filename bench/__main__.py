"""`make bench`: Evolution text webhooks through the running mesh to the fakes, against the direct pipeline.

It starts the Evolution simulator and the echo agent as their own processes, the mesh (launcher, as `make run`),
creates an instance, then:
1. the direct pipeline: N x (agent call + Evolution sendText) at concurrency C from this process, no hub;
2. the hub: N webhooks posted at concurrency C over distinct chats; it records each webhook's ack latency and, from
   the simulator's records, when each reply was sent; it checks that every message got exactly one reply.
Three hub phases: steady open-loop arrivals at --rate (how WhatsApp users send); a closed-loop burst (the most
load the hub takes: its capacity); the same burst with the router paused (SIGSTOP) until every webhook is
acknowledged, which measures the acknowledgement path alone and then the drain of the stored backlog.
It prints ack p50/p99, end-to-end replies/s and p50/p99, lost and duplicated replies, the CPU seconds each
process used, and a verdict against the targets of issue 3.

Why the ack target is judged in the steady phase: in a closed loop every poster waits for its answer, so
ack latency = in-flight / ack throughput (Little's law); 50 in flight under 25 ms needs more than 2,000 acks/s,
above what the ack path alone (gateway + ingress, measured in the paused phase) reaches on two cores.

Then, unless --skip-discord, the Discord part (`bench.discord_phase`) in the same mesh: messages through the bots'
gateway path (steady and burst, against a Discord direct pipeline, printed beside WhatsApp's figures) and
--bots bots connected in one ingress process.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import shutil
import signal
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from bench.discord_phase import Options, WhatsAppFigures, mesh_env, run_discord
from bench.helpers import start_helper, stop_helper
from bench.procstat import cpu_seconds, cpu_seconds_of_command, own_cpu_seconds
from bench.slack_phase import run_slack
from bench.stats import percentile
from launcher.local_mesh import REPO_ROOT, LocalMesh, free_port
from servicekit.runner import run
from simulators.evolution import text_upsert
from simulators.slack import SlackSimulator

EVOLUTION_KEY = "bench-evolution-key"
AGENT_KEY = "bench-agent-key"
INSTANCE = "bench"


@dataclass
class Measured:
    """What one phase of the hub benchmark measured."""

    ack_ms: list[float]
    acks_per_second: float
    failed_acks: int
    e2e_ms: list[float]
    replies_per_second: float
    lost: int
    duplicated: int
    cpu: dict[str, float]
    drain_seconds: float = 0.0
    """Paused phase only: from resuming the router to the last reply."""


@dataclass
class HubRun:
    ack_ms: list[float] = field(default_factory=list)
    posted_at: dict[str, float] = field(default_factory=dict)
    failed_acks: int = 0


async def direct_pipeline(agent: str, evolution: str, n: int, concurrency: int) -> tuple[float, list[float]]:
    """Agent call then sendText per message, no hub: returns (replies/s, latencies ms)."""
    latencies: list[float] = []
    gate = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency * 2)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(i: int) -> None:
            async with gate:
                started = time.perf_counter()
                body = {"message": f"direct {i}", "user_id": "u", "session_id": "s", "message_type": "text"}
                async with session.post(
                    f"{agent}/api/agent/chat", json=body, headers={"x-api-key": AGENT_KEY}
                ) as response:
                    reply = await response.json()
                async with session.post(
                    f"{evolution}/message/sendText/{INSTANCE}",
                    json={"number": f"55119{i % 1000:08d}", "text": reply["text"]},
                    headers={"apikey": EVOLUTION_KEY},
                ) as response:
                    await response.read()
                latencies.append((time.perf_counter() - started) * 1000)

        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        elapsed = time.perf_counter() - started
    return n / elapsed, latencies


async def hub_run(mesh: LocalMesh, n: int, concurrency: int, chats: int, rate: float = 0.0) -> HubRun:
    """Post N webhooks with at most C in flight, recording ack latency and post time per message token.

    rate = 0 is a closed loop (each of the C posters sends its next webhook as soon as the previous is answered: the
    most load the hub can take); rate > 0 is an open loop that starts one webhook every 1/rate seconds, the way
    messages arrive from WhatsApp users.
    """
    result = HubRun()
    gate = asyncio.Semaphore(concurrency)
    # The header Omni registers in Evolution (webhook/set), not the URL's opt-in ?secret=.
    url = f"{mesh.base_url}/api/v1/webhook/evolution/{INSTANCE}"
    headers = mesh.webhook_headers(INSTANCE)
    connector = aiohttp.TCPConnector(limit=concurrency * 2)
    begin = time.perf_counter()
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(i: int) -> None:
            token = f"m{i}-{uuid.uuid4().hex[:6]}"
            chat = f"55{21900000000 + i % chats}@s.whatsapp.net"
            payload = text_upsert(INSTANCE, chat, token, push_name=f"Sender {i % chats}")
            if rate > 0:
                await asyncio.sleep(max(0.0, begin + i / rate - time.perf_counter()))
            async with gate:
                started = time.perf_counter()
                result.posted_at[token] = time.time()
                async with session.post(url, json=payload, headers=headers) as response:
                    await response.read()
                    if response.status != 200:
                        result.failed_acks += 1
                result.ack_ms.append((time.perf_counter() - started) * 1000)

        await asyncio.gather(*(one(i) for i in range(n)))
    return result


async def wait_for_replies(evolution: str, expected: int, timeout: float) -> list[dict[str, Any]]:
    """Poll the simulator until `expected` replies were sent (or the time is up)."""
    deadline = time.monotonic() + timeout
    sent: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            async with session.get(f"{evolution}/__sim/sent") as response:
                sent = await response.json()
            if len(sent) >= expected:
                await asyncio.sleep(1.0)  # anything more would be a duplicate
                async with session.get(f"{evolution}/__sim/sent") as response:
                    return list(await response.json())
            await asyncio.sleep(0.25)
    return sent


async def measure(
    mesh: LocalMesh,
    evolution: str,
    pids: dict[str, int | None],
    n: int,
    concurrency: int,
    chats: int,
    rate: float,
    timeout: float,
    *,
    pause_router: bool = False,
    settle_seconds: float = 0.0,
) -> Measured:
    """One phase: post, wait for every reply, and account for latency, loss, duplicates and CPU.

    With `pause_router` the router is stopped (SIGSTOP) while the webhooks are posted and resumed once all are
    acknowledged: the acks measure the accept path alone, and the replies/s the drain of the stored backlog.
    """
    async with aiohttp.ClientSession() as session:
        await session.post(f"{evolution}/__sim/reset")
    cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items() if pid}
    bench_before = own_cpu_seconds()
    postgres_before = cpu_seconds_of_command("postgres")
    if pause_router:
        mesh.supervisor.kill("router", signal.SIGSTOP)
    started = time.time()
    try:
        run_result = await hub_run(mesh, n, concurrency, chats, rate)
    finally:
        ack_done = time.time()
        if pause_router:
            mesh.supervisor.kill("router", signal.SIGCONT)
    sent = await wait_for_replies(evolution, n, timeout)
    await asyncio.sleep(settle_seconds)  # work that follows the replies (receipt webhooks) is counted too
    cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items() if pid}
    cpu["bench client"] = own_cpu_seconds() - bench_before
    postgres = cpu_seconds_of_command("postgres") - postgres_before
    if postgres > 0.05:
        cpu["postgresql"] = postgres
    replies: dict[str, list[float]] = {}
    for message in sent:
        token = message["text"].removeprefix("Echo: ")
        replies.setdefault(token, []).append(message["received_at"])
    posted = run_result.posted_at
    e2e = [(min(times) - posted[token]) * 1000 for token, times in replies.items() if token in posted]
    last = max((min(times) for times in replies.values()), default=started)
    counted_from = ack_done if pause_router else started
    return Measured(
        ack_ms=run_result.ack_ms,
        acks_per_second=n / (ack_done - started),
        failed_acks=run_result.failed_acks,
        e2e_ms=e2e,
        replies_per_second=len(replies) / (last - counted_from) if replies and last > counted_from else 0.0,
        lost=sum(1 for token in posted if token not in replies),
        duplicated=sum(len(times) - 1 for times in replies.values()),
        cpu=cpu,
        drain_seconds=last - ack_done if pause_router else 0.0,
    )


def report(title: str, m: Measured, n: int) -> None:
    """Print one phase's figures."""
    print(f"\n== {title}")
    print(f"  webhook ack      p50 {percentile(m.ack_ms, 50):7.1f} ms   p99 {percentile(m.ack_ms, 99):7.1f} ms   "
          f"max {max(m.ack_ms):7.1f} ms   {m.acks_per_second:6.0f} acks/s   non-2xx {m.failed_acks}")  # fmt: skip
    if m.drain_seconds:
        print(f"  backlog drained  {m.drain_seconds:7.1f} s after the router resumed   {m.replies_per_second:6.1f} "
              f"replies/s   lost {m.lost}   duplicated {m.duplicated}")  # fmt: skip
    else:
        print(f"  end to end       p50 {percentile(m.e2e_ms, 50):7.1f} ms   p99 {percentile(m.e2e_ms, 99):7.1f} ms   "
              f"{m.replies_per_second:6.1f} replies/s   lost {m.lost}   duplicated {m.duplicated}")  # fmt: skip
    total = sum(m.cpu.values())
    print(f"  CPU seconds ({total:.2f} s in all, {total / n * 1000:.2f} ms per message):")
    for name, seconds in sorted(m.cpu.items(), key=lambda item: -item[1]):
        print(f"    {name:<14} {seconds:7.2f} s   ({seconds / n * 1000:5.2f} ms per message)")


def verdict(steady: Measured, burst: Measured, paused: Measured, rate: float, concurrency: int) -> None:
    """Print the targets of issue 3 against what was measured."""
    ack_p99 = percentile(steady.ack_ms, 99)
    phases = (steady, burst, paused)
    lost = sum(m.lost for m in phases)
    duplicated = sum(m.duplicated for m in phases)
    checks = [
        (f"webhook ack p99 < 25 ms at {rate:.0f}/s arrivals, <= {concurrency} in flight", f"{ack_p99:.1f} ms",
         ack_p99 < 25),
        ("end-to-end capacity >= 200 replies/s (closed-loop burst)", f"{burst.replies_per_second:.1f} replies/s",
         burst.replies_per_second >= 200),
        ("nothing lost, nothing answered twice (all phases)", f"lost {lost}, duplicated {duplicated}",
         lost == 0 and duplicated == 0),
    ]  # fmt: skip
    print("\n== targets")
    for name, value, met in checks:
        print(f"  [{'met' if met else 'MISSED'}] {name}: {value}")
    needed = concurrency / 0.025
    print(f"  (closed loop: {concurrency} in flight under 25 ms would need {needed:,.0f} acks/s; the ack path alone "
          f"reached {paused.acks_per_second:,.0f}/s with the router paused)")  # fmt: skip


async def receipts_phase(
    mesh: LocalMesh, evolution: str, pids: dict[str, int | None], args: argparse.Namespace, burst: Measured
) -> None:
    """The burst again with Evolution posting a delivery and a read receipt (messages.update) after every reply, as
    a real phone does: what showing receipts on the traces costs per message, beside the same burst without."""
    async with aiohttp.ClientSession() as session:
        await session.post(f"{evolution}/__sim/receipts", json={"statuses": ["DELIVERY_ACK", "READ"]})
    try:
        with_receipts = await measure(mesh, evolution, pids, args.messages, args.concurrency, args.chats, 0.0,
                                      args.timeout, settle_seconds=3.0)  # fmt: skip
    finally:
        async with aiohttp.ClientSession() as session:
            await session.post(f"{evolution}/__sim/receipts", json={"statuses": []})
    report(f"burst with receipts: {args.messages} webhooks, each reply followed by 2 receipt webhooks", with_receipts,
           args.messages)  # fmt: skip
    plain = sum(burst.cpu.values()) / args.messages * 1000
    receipts = sum(with_receipts.cpu.values()) / args.messages * 1000
    print(f"  receipts cost {receipts - plain:+.2f} ms CPU per message ({(receipts - plain) / 2:+.2f} ms per receipt "
          f"webhook): {plain:.2f} -> {receipts:.2f} ms")  # fmt: skip


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=2000, help="webhooks in the closed-loop burst")
    parser.add_argument("--steady-messages", type=int, default=1000, help="webhooks in the open-loop phase")
    parser.add_argument("--rate", type=float, default=200, help="arrivals per second in the open-loop phase")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--chats", type=int, default=200, help="distinct conversations the messages spread over")
    parser.add_argument("--database-url", default="", help="PostgreSQL URL (default: SQLite files)")
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--discord-messages", type=int, default=1000, help="messages in each Discord phase")
    parser.add_argument("--discord-instances", type=int, default=4, help="bots the Discord messages spread over")
    parser.add_argument("--bots", type=int, default=100, help="Discord bots connected at once in one ingress")
    parser.add_argument("--skip-discord", action="store_true", help="no Discord phases")
    parser.add_argument(
        "--skip-receipts", action="store_true", help="no burst with Evolution's delivery and read receipts"
    )
    parser.add_argument("--skip-slack", action="store_true", help="no Slack phase")
    parser.add_argument("--slack-messages", type=int, default=500, help="DMs in the Slack phase")
    parser.add_argument("--slack-workspaces", type=int, default=4, help="workspaces the Slack DMs spread over")
    args = parser.parse_args()

    evolution = await start_helper(
        "evolution", "simulators.evolution", "--port", str(free_port()), "--api-key", EVOLUTION_KEY,
        "--instance", f"{INSTANCE}:{EVOLUTION_KEY}",
    )  # fmt: skip
    agent = await start_helper("agent", "examples.agent_echo", "--port", str(free_port()), "--api-key", AGENT_KEY)
    helpers = [evolution, agent]
    discord = None
    if not args.skip_discord:
        discord = await start_helper("discord-sim", "simulators.discord", "--port", str(free_port()))
        helpers.append(discord)
    slack = None
    if not args.skip_slack:
        slack = SlackSimulator(retry_delays=(60.0, 300.0, 300.0))  # Slack's schedule: a retry would be a miss
        await slack.start()
    data_dir = REPO_ROOT / "data" / "bench"
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    mesh = LocalMesh(data_dir, api_key=secrets.token_urlsafe(16), database_url=args.database_url, prefix_output=False,
                     extra_env={**(await mesh_env(discord.url) if discord else {}),
                                **({"AUTOMAGIK_OMNI_SLACK_API_URL": slack.api_url} if slack else {})})  # fmt: skip
    try:
        await mesh.start()
        await mesh.create_instance(
            name=INSTANCE, channel_type="whatsapp", evolution_url=evolution.url, evolution_key=EVOLUTION_KEY,
            whatsapp_instance=INSTANCE, agent_api_url=agent.url, agent_api_key=AGENT_KEY, default_agent="echo",
        )  # fmt: skip
        print(f"mesh up; messages spread over {args.chats} chats")

        await hub_run(mesh, 50, 10, 10)  # warm-up: connections, caches, JIT-free but first-call paths
        await wait_for_replies(evolution.url, 50, 30)
        direct_rate, direct_lat = await direct_pipeline(agent.url, evolution.url, args.messages, args.concurrency)
        async with aiohttp.ClientSession() as session:
            await session.post(f"{evolution.url}/__sim/reset")

        pids = {name: mesh.supervisor.pid(name) for name in ("gateway", "ingress", "router", "channels", "tracing")}
        pids |= {"evolution-sim": evolution.process.pid, "echo-agent": agent.process.pid}
        steady = await measure(mesh, evolution.url, pids, args.steady_messages, args.concurrency, args.chats,
                               args.rate, args.timeout)  # fmt: skip
        burst = await measure(mesh, evolution.url, pids, args.messages, args.concurrency, args.chats, 0.0, args.timeout)
        paused = await measure(mesh, evolution.url, pids, args.messages, args.concurrency, args.chats, 0.0,
                               args.timeout, pause_router=True)  # fmt: skip
        report(f"steady arrivals: {args.steady_messages} webhooks at {args.rate:.0f}/s (at most {args.concurrency} "
               "in flight)", steady, args.steady_messages)  # fmt: skip
        report(f"burst: {args.messages} webhooks, closed loop at concurrency {args.concurrency}", burst, args.messages)
        report("router paused: the same burst stored while the router is stopped, then drained", paused,
               args.messages)  # fmt: skip
        if not args.skip_receipts:
            await receipts_phase(mesh, evolution.url, pids, args, burst)
        print("\n== direct pipeline (agent call + sendText, no hub, closed loop at the same concurrency)")
        print(f"  {direct_rate:7.1f} replies/s   p50 {percentile(direct_lat, 50):7.1f} ms   "
              f"p99 {percentile(direct_lat, 99):7.1f} ms")  # fmt: skip
        verdict(steady, burst, paused, args.rate, args.concurrency)
        failed = any(m.lost or m.duplicated for m in (steady, burst, paused))
        if discord is not None:
            whatsapp = WhatsAppFigures(
                steady=steady, burst=burst, burst_messages=args.messages, direct_replies_per_second=direct_rate,
                lost=sum(m.lost for m in (steady, burst, paused)),
                duplicated=sum(m.duplicated for m in (steady, burst, paused)),
            )  # fmt: skip
            options = Options(
                messages=args.discord_messages, instances=args.discord_instances, chats=args.chats, rate=args.rate,
                concurrency=args.concurrency, bots=args.bots, timeout=args.timeout,
            )  # fmt: skip
            discord_pids = {name: pid for name, pid in pids.items() if pid and name != "evolution-sim"}
            discord_pids["discord-sim"] = discord.process.pid
            failed |= not await run_discord(mesh, discord.url, agent.url, AGENT_KEY, discord_pids, options, whatsapp)
        if slack is not None:
            failed |= not await run_slack(
                mesh, slack, agent.url, AGENT_KEY, messages=args.slack_messages, workspaces=args.slack_workspaces,
                concurrency=args.concurrency, timeout=args.timeout,
            )  # fmt: skip
        if failed:
            raise SystemExit(1)  # a throughput miss is a figure; a lost or doubled reply is a failure
    finally:
        await mesh.stop()
        for helper in helpers:
            await stop_helper(helper)
        if slack is not None:
            await slack.stop()


if __name__ == "__main__":
    run(main())
