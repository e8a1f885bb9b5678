"""The Discord part of `make bench`: messages through the bots' gateway path, and 100 bots in one ingress process.

The Discord simulator runs as its own process (REST API + gateway that unmodified discord.py clients log into) and
the mesh finds it through AUTOMAGIK_OMNI_DISCORD_API_URL / _GATEWAY_URL. Ingress runs one discord.py client per
active Discord instance; channels sends each reply over REST with the instance's own token.

Messages: `--discord-instances` bots, each in its own guild; the messages spread over `--chats` conversations, half
of them DMs to a bot, half mentions of a bot in a guild channel. A user's message is posted through the
simulator's control API (`/__sim/dms`, `/__sim/messages`), which pushes MESSAGE_CREATE to the bot's gateway
session; the reply is what the simulator recorded (`/__sim/sent`), and end to end is post → reply recorded.
Two phases, as for WhatsApp:
1. steady arrivals at --rate (open loop, at most --concurrency posts in flight);
2. a burst posted as fast as the simulator takes them. Discord has no acknowledgement the hub could hold back
   (the gateway pushes; a busy bot only buffers), so a closed loop on the post would not load the hub more: this
   phase is a backlog, and its replies/s is the hub's capacity on this path.
Every message must get exactly one reply, in its own channel, answering it (`message_reference`).
The direct pipeline (agent call + Discord REST message create with a bot token, no hub) is the comparison.

Fleet: `--bots` instances (each its own bot and guild) are created at once. It reports the time until every
bot's gateway session is READY (the simulator's view) and until the public status says `connected` (the state
ingress stores for the API), the ingress process's RSS, threads and file descriptors,
its CPU while connecting and during an idle spell with every bot connected (heartbeats, lease renewals), and
then sends one DM to each bot, each of which must answer.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp

from bench.procstat import (
    cpu_seconds,
    cpu_seconds_of_command,
    machine_cpu_seconds,
    open_fds,
    own_cpu_seconds,
    rss_mib,
    thread_count,
)
from bench.stats import percentile
from launcher.local_mesh import LocalMesh

REPLY_PREFIX = "Echo: "
"""What the echo agent puts before the text it answers."""
MESSAGE_INSTANCE = "bench-discord-{index}"
FLEET_INSTANCE = "bench-fleet-{index:03d}"
IDLE_SECONDS = 10.0
"""How long the fleet's idle CPU is measured (a few heartbeats and two lease renewals)."""
CONNECT_TIMEOUT = 120.0
OTHER = "(other processes on this machine)"
SIMULATOR = "channel sim"
"""The name both simulators share in the side-by-side table."""


class Phase(Protocol):
    """The figures of one WhatsApp or Discord phase the side-by-side table reads."""

    @property
    def e2e_ms(self) -> list[float]: ...

    @property
    def replies_per_second(self) -> float: ...

    @property
    def cpu(self) -> dict[str, float]: ...


@dataclass
class WhatsAppFigures:
    """What the Discord report sets beside its own: the WhatsApp phases of the same run."""

    steady: Phase
    burst: Phase
    burst_messages: int
    direct_replies_per_second: float
    lost: int
    duplicated: int


@dataclass(frozen=True)
class Options:
    """The command line's Discord settings."""

    messages: int
    instances: int
    chats: int
    rate: float
    concurrency: int
    bots: int
    timeout: float


@dataclass(frozen=True)
class Chat:
    """One conversation: a user and a bot, in a guild channel or (channel_id "") their DM."""

    bot_id: str
    user_id: str
    channel_id: str = ""


@dataclass(frozen=True)
class Posted:
    """A user's message as posted: when (epoch seconds), its id and its channel (the reply must answer both)."""

    at: float
    message_id: str
    channel_id: str


@dataclass
class Measured:
    """What one Discord message phase measured."""

    messages: int
    e2e_ms: list[float]
    replies_per_second: float
    posts_per_second: float
    lost: int
    duplicated: int
    misdirected: int
    """Replies in another channel than the message's, or not answering it."""
    failed_posts: int
    """Messages the simulator refused to post (counted as lost)."""
    cpu: dict[str, float]
    elsewhere: float
    """CPU seconds the machine spent outside the listed processes meanwhile (another program disturbing the run)."""


@dataclass
class Connected:
    """How long a set of bots took to connect, seen by the simulator and by the public status."""

    gateway_seconds: float | None
    api_seconds: float | None
    connected: int


@dataclass
class Fleet:
    """What the fleet phase measured."""

    bots: int
    create_seconds: float
    connected: Connected
    connect_window: float
    connect_cpu: dict[str, float]
    idle_cpu: dict[str, float]
    ingress: dict[str, tuple[float, float, float]]
    """RSS MiB, threads, fds of ingress: before, connected, after the idle spell."""
    channels_rss: tuple[float, float]
    """Channels' RSS before and after every bot's first reply (one logged-in REST client per bot)."""
    dms: Measured
    """One DM to each bot."""


class Simulator:
    """The Discord simulator's control API (`/__sim/*`)."""

    def __init__(self, url: str, session: aiohttp.ClientSession) -> None:
        self.url = url
        self.session = session

    async def call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        async with self.session.request(method, self.url + path, json=body) as response:
            answer = await response.json()
            if response.status >= 300:
                raise RuntimeError(f"{method} {path} answered {response.status}: {answer}")
            return answer

    async def add_bot(self, name: str) -> dict[str, Any]:
        bot: dict[str, Any] = await self.call("POST", "/__sim/bots", {"name": name})
        return bot

    async def add_guild(self, name: str, bot_id: str, channels: Sequence[str]) -> dict[str, Any]:
        guild: dict[str, Any] = await self.call(
            "POST", "/__sim/guilds", {"name": name, "bots": [bot_id], "channels": list(channels)}
        )
        return guild

    async def add_user(self, name: str) -> str:
        user = await self.call("POST", "/__sim/users", {"name": name})
        return str(user["id"])

    async def post(self, chat: Chat, text: str) -> dict[str, Any]:
        """A user's message: a DM to the bot, or a mention of it in a guild channel."""
        if chat.channel_id:
            body = {"channel_id": chat.channel_id, "author_id": chat.user_id, "content": f"<@{chat.bot_id}> {text}",
                    "mentions": [chat.bot_id]}  # fmt: skip
            message: dict[str, Any] = await self.call("POST", "/__sim/messages", body)
        else:
            message = await self.call("POST", "/__sim/dms", {"bot_id": chat.bot_id, "user_id": chat.user_id,
                                                             "content": text})  # fmt: skip
        return message

    async def sent_count(self) -> int:
        return int((await self.call("GET", "/__sim/state"))["sent"])

    async def connected_bot_ids(self) -> set[str]:
        return set((await self.call("GET", "/__sim/state"))["connected_bot_ids"])


async def mesh_env(sim_url: str) -> dict[str, str]:
    """The environment that points the mesh at the simulator (asked for its REST and gateway URLs)."""
    async with aiohttp.ClientSession() as session:
        state = await Simulator(sim_url, session).call("GET", "/__sim/state")
    return {
        "AUTOMAGIK_OMNI_DISCORD_API_URL": state["api_url"],
        "AUTOMAGIK_OMNI_DISCORD_GATEWAY_URL": state["gateway_url"],
        "AUTOMAGIK_OMNI_DISCORD_GUILD_READY_TIMEOUT_SECONDS": "0.1",
    }


async def gather_limited(concurrency: int, jobs: Sequence[Callable[[], Awaitable[Any]]]) -> list[Any]:
    """Run the jobs with at most `concurrency` at once; results in order."""
    gate = asyncio.Semaphore(concurrency)

    async def one(job: Callable[[], Awaitable[Any]]) -> Any:
        async with gate:
            return await job()

    return list(await asyncio.gather(*(one(job) for job in jobs)))


def cpu_now(pids: Mapping[str, int]) -> dict[str, float]:
    """CPU seconds so far of each process, of this one and of the PostgreSQL server."""
    now = {name: cpu_seconds(pid) for name, pid in pids.items()}
    now["bench client"] = own_cpu_seconds()
    now["postgresql"] = cpu_seconds_of_command("postgres")
    return now


def cpu_since(before: Mapping[str, float], pids: Mapping[str, int]) -> dict[str, float]:
    used = {name: seconds - before[name] for name, seconds in cpu_now(pids).items()}
    if used["postgresql"] <= 0.05:
        del used["postgresql"]
    return used


def elsewhere(machine_before: float, used: Mapping[str, float]) -> float:
    """CPU seconds the machine spent since `machine_before` outside the processes in `used`."""
    return max(0.0, machine_cpu_seconds() - machine_before - sum(used.values()))


async def create_instances(
    mesh: LocalMesh, tokens: Mapping[str, str], agent_url: str, agent_key: str, concurrency: int
) -> None:
    """One Discord instance per (name, bot token), answering with the echo agent."""

    def create(name: str, token: str) -> Callable[[], Awaitable[Any]]:
        return lambda: mesh.create_instance(
            name=name, channel_type="discord", discord_bot_token=token, agent_api_url=agent_url,
            agent_api_key=agent_key, default_agent="echo",
        )  # fmt: skip

    await gather_limited(concurrency, [create(name, token) for name, token in tokens.items()])


async def wait_connected(
    mesh: LocalMesh, sim: Simulator, bots: Mapping[str, str], started: float, timeout: float
) -> Connected:
    """Poll until every bot (instance name → bot id) has a READY gateway session and its status is `connected`."""
    gateway_at: float | None = None
    api_at: float | None = None
    connected = 0
    wanted = set(bots.values())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (gateway_at is None or api_at is None):
        if gateway_at is None and wanted <= await sim.connected_bot_ids():
            gateway_at = time.monotonic()
        if api_at is None:
            _, health = await mesh.get_json("/health")
            statuses = health.get("bots") or {}
            connected = sum(1 for name in bots if (statuses.get(name) or {}).get("status") == "connected")
            if connected == len(bots):
                api_at = time.monotonic()
        await asyncio.sleep(0.1)
    return Connected(
        gateway_seconds=gateway_at - started if gateway_at is not None else None,
        api_seconds=api_at - started if api_at is not None else None,
        connected=connected,
    )


async def post_messages(
    sim: Simulator, chats: Sequence[Chat], n: int, concurrency: int, rate: float
) -> tuple[dict[str, Posted], int]:
    """Post N messages over the chats (at `rate` per second, or as fast as possible when 0); returns the posts by
    token and how many the simulator refused."""
    posted: dict[str, Posted] = {}
    failed = 0
    gate = asyncio.Semaphore(concurrency)
    begin = time.perf_counter()

    async def one(i: int) -> None:
        nonlocal failed
        token = f"d{i}-{uuid.uuid4().hex[:6]}"
        if rate > 0:
            await asyncio.sleep(max(0.0, begin + i / rate - time.perf_counter()))
        async with gate:
            at = time.time()
            try:
                message = await sim.post(chats[i % len(chats)], token)
            except (RuntimeError, aiohttp.ClientError):
                failed += 1
                return
            posted[token] = Posted(at, str(message["id"]), str(message["channel_id"]))

    await asyncio.gather(*(one(i) for i in range(n)))
    return posted, failed


async def wait_for_replies(sim: Simulator, expected: int, timeout: float) -> list[dict[str, Any]]:
    """Wait until the simulator recorded `expected` bot messages (or the time is up), then one second more for any
    duplicate, and return them all."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await sim.sent_count() >= expected:
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)
    sent: list[dict[str, Any]] = await sim.call("GET", "/__sim/sent")
    return sent


Accounted = tuple[list[float], int, int, int, float]


def account(posted: Mapping[str, Posted], sent: Sequence[Mapping[str, Any]]) -> Accounted:
    """(end-to-end ms, lost, duplicated, misdirected, time of the last first reply) of the posts against the
    replies the simulator recorded."""
    replies: dict[str, list[Mapping[str, Any]]] = {}
    for message in sent:
        replies.setdefault(str(message["content"]).removeprefix(REPLY_PREFIX), []).append(message)
    e2e: list[float] = []
    lost = duplicated = misdirected = 0
    last = 0.0
    for token, post in posted.items():
        answers = replies.get(token)
        if not answers:
            lost += 1
            continue
        duplicated += len(answers) - 1
        first = min(answers, key=lambda m: float(m["created_at"]))
        e2e.append((float(first["created_at"]) - post.at) * 1000)
        last = max(last, float(first["created_at"]))
        if first["channel_id"] != post.channel_id or first["message_reference"] != post.message_id:
            misdirected += 1
    return e2e, lost, duplicated, misdirected, last


async def measure(
    sim: Simulator, chats: Sequence[Chat], pids: Mapping[str, int], n: int, concurrency: int, rate: float,
    timeout: float,
) -> Measured:  # fmt: skip
    """One phase: post, wait for every reply, and account for latency, loss, duplicates, misdirection and CPU."""
    await sim.call("POST", "/__sim/reset")
    before = cpu_now(pids)
    machine_before = machine_cpu_seconds()
    started = time.time()
    posted, failed = await post_messages(sim, chats, n, concurrency, rate)
    posts_done = time.time()
    sent = await wait_for_replies(sim, len(posted), timeout)
    cpu = cpu_since(before, pids)
    other = elsewhere(machine_before, cpu)
    e2e, lost, duplicated, misdirected, last = account(posted, sent)
    return Measured(
        messages=n,
        e2e_ms=e2e,
        replies_per_second=len(e2e) / (last - started) if e2e and last > started else 0.0,
        posts_per_second=len(posted) / (posts_done - started) if posts_done > started else 0.0,
        lost=lost,
        duplicated=duplicated,
        misdirected=misdirected,
        failed_posts=failed,
        cpu=cpu,
        elsewhere=other,
    )


async def direct_pipeline(
    agent_url: str, agent_key: str, api_url: str, targets: Sequence[tuple[str, str]], n: int, concurrency: int
) -> tuple[float, list[float], int]:
    """Agent call then a Discord REST message create per message, no hub: (replies/s, latencies ms, failures).

    `targets` are (bot token, guild channel id) pairs, used in turn (the simulator's rate limit is per bot and
    channel); the bot has no gateway session, so no bot of the hub hears these messages."""
    latencies: list[float] = []
    failures = 0
    gate = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency * 2)) as session:

        async def one(i: int) -> None:
            nonlocal failures
            token, channel_id = targets[i % len(targets)]
            async with gate:
                started = time.perf_counter()
                body = {"message": f"direct {i}", "user_id": "u", "session_id": "s", "message_type": "text"}
                async with session.post(
                    f"{agent_url}/api/agent/chat", json=body, headers={"x-api-key": agent_key}
                ) as response:
                    reply = await response.json()
                async with session.post(
                    f"{api_url}/channels/{channel_id}/messages",
                    json={"content": reply["text"]},
                    headers={"Authorization": f"Bot {token}"},
                ) as response:
                    await response.read()
                    failures += response.status != 200
                latencies.append((time.perf_counter() - started) * 1000)

        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        elapsed = time.perf_counter() - started
    return n / elapsed, latencies, failures


async def stage_message_bots(
    sim: Simulator, instances: int, chats: int
) -> tuple[dict[str, dict[str, Any]], list[Chat]]:
    """Bots with a guild each, and one user per chat; chat j talks to bot j % instances, alternately by DM and in
    a guild channel of its own. Returns (bot by instance name, chats)."""
    per_guild = max(1, math.ceil(chats / instances / 2))
    bots: dict[str, dict[str, Any]] = {}
    channels: dict[str, list[str]] = {}
    for index in range(instances):
        bot = await sim.add_bot(f"bench-bot-{index}")
        guild = await sim.add_guild(f"bench-guild-{index}", bot["id"], [f"room-{c}" for c in range(per_guild)])
        bots[MESSAGE_INSTANCE.format(index=index)] = bot
        channels[bot["id"]] = list(guild["channel_ids"].values())

    def user(j: int) -> Callable[[], Awaitable[str]]:
        return lambda: sim.add_user(f"user-{j}")

    users = await gather_limited(20, [user(j) for j in range(chats)])
    ids = [bot["id"] for bot in bots.values()]
    staged = []
    for j, user_id in enumerate(users):
        bot_id = ids[j % instances]
        in_guild = (j // instances) % 2 == 1
        staged.append(Chat(bot_id, user_id, channels[bot_id][(j // instances // 2) % per_guild] if in_guild else ""))
    return bots, staged


async def fleet(
    mesh: LocalMesh, sim: Simulator, pids: Mapping[str, int], agent_url: str, agent_key: str, count: int,
    timeout: float,
) -> Fleet:  # fmt: skip
    """Create `count` instances at once (each its own bot and guild) and measure ingress while they connect, while
    they idle, and one DM to each."""
    ingress, channels = pids["ingress"], pids["channels"]
    bots: dict[str, dict[str, Any]] = {}
    for index in range(count):
        bot = await sim.add_bot(f"fleet-bot-{index:03d}")
        await sim.add_guild(f"fleet-guild-{index:03d}", bot["id"], ["general"])
        bots[FLEET_INSTANCE.format(index=index)] = bot
    user = await sim.add_user("fleet-user")

    def snapshot() -> tuple[float, float, float]:
        return rss_mib(ingress), float(thread_count(ingress)), float(open_fds(ingress))

    before = snapshot()
    cpu_before, machine_before = cpu_now(pids), machine_cpu_seconds()
    started = time.monotonic()
    await create_instances(mesh, {name: bot["token"] for name, bot in bots.items()}, agent_url, agent_key, 10)
    created = time.monotonic() - started
    connected = await wait_connected(mesh, sim, {name: bot["id"] for name, bot in bots.items()}, started, timeout)
    window = time.monotonic() - started
    connect_cpu = cpu_since(cpu_before, pids)
    connect_cpu[OTHER] = elsewhere(machine_before, connect_cpu)
    at_connect = snapshot()
    cpu_before, machine_before = cpu_now(pids), machine_cpu_seconds()
    await asyncio.sleep(IDLE_SECONDS)
    idle_cpu = cpu_since(cpu_before, pids)
    idle_cpu[OTHER] = elsewhere(machine_before, idle_cpu)
    after_idle = snapshot()
    channels_before = rss_mib(channels)
    chats = [Chat(bot["id"], user) for bot in bots.values()]
    dms = await measure(sim, chats, pids, count, 20, 0.0, timeout)
    return Fleet(
        bots=count,
        create_seconds=created,
        connected=connected,
        connect_window=window,
        connect_cpu=connect_cpu,
        idle_cpu=idle_cpu,
        ingress={"before": before, "connected": at_connect, "idle": after_idle},
        channels_rss=(channels_before, rss_mib(channels)),
        dms=dms,
    )


async def remove_instances(mesh: LocalMesh, sim: Simulator, bots: Mapping[str, str], timeout: float = 30.0) -> None:
    """Delete the instances and wait until their bots left the gateway."""
    for name in bots:
        async with mesh.client.delete(f"/api/v1/instances/{name}") as response:
            if response.status != 204:
                raise RuntimeError(f"deleting {name} answered {response.status}: {await response.text()}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not set(bots.values()) & await sim.connected_bot_ids():
            return
        await asyncio.sleep(0.1)


def per_message(seconds: float, n: int) -> float:
    return seconds / n * 1000 if n else 0.0


def report(title: str, m: Measured) -> None:
    """Print one message phase's figures."""
    print(f"\n== {title}")
    print(f"  posted           {m.posts_per_second:7.0f} messages/s through the simulator   refused {m.failed_posts}")
    print(f"  end to end       p50 {percentile(m.e2e_ms, 50):7.1f} ms   p99 {percentile(m.e2e_ms, 99):7.1f} ms   "
          f"max {max(m.e2e_ms, default=0.0):7.1f} ms   {m.replies_per_second:6.1f} replies/s")  # fmt: skip
    print(f"  replies          lost {m.lost}   duplicated {m.duplicated}   in the wrong channel or thread "
          f"{m.misdirected}")  # fmt: skip
    total = sum(m.cpu.values())
    print(f"  CPU seconds ({total:.2f} s in all, {per_message(total, m.messages):.2f} ms per message):")
    for name, seconds in sorted(m.cpu.items(), key=lambda item: -item[1]):
        print(f"    {name:<14} {seconds:7.2f} s   ({per_message(seconds, m.messages):5.2f} ms per message)")
    print(f"  (meanwhile {m.elsewhere:.2f} CPU seconds went to other processes on this machine)")


def report_fleet(f: Fleet) -> None:
    """Print the fleet's figures."""
    c = f.connected

    def seconds(value: float | None) -> str:
        return f"{value:.1f} s" if value is not None else f"NOT within {CONNECT_TIMEOUT:.0f} s"

    print(f"\n== {f.bots} bots in one ingress process (each its own token and guild), created at once")
    print(f"  {f.bots} instances created through the API in {f.create_seconds:.1f} s (10 at a time)")
    print(f"  every gateway session READY (simulator's view)   after {seconds(c.gateway_seconds)}")
    print(f"  every status `connected` (GET /health)          after {seconds(c.api_seconds)}   "
          f"({c.connected}/{f.bots}: the state ingress stored for the public API)")  # fmt: skip
    rows = [("RSS MiB", 0, "{:.1f}"), ("threads", 1, "{:.0f}"), ("open fds", 2, "{:.0f}")]
    for label, i, fmt in rows:
        b, k, d = (f.ingress[key][i] for key in ("before", "connected", "idle"))
        extra = f"   (+{(d - b) / f.bots:.2f} per bot)"
        print(f"  ingress {label:<9} {fmt.format(b):>7} before   {fmt.format(k):>7} connected   "
              f"{fmt.format(d):>7} after {IDLE_SECONDS:.0f} s idle{extra}")  # fmt: skip
    ingress_connect = f.connect_cpu.get("ingress", 0.0)
    print(f"  CPU while connecting ({f.connect_window:.1f} s from the first create to every status connected): "
          f"ingress {ingress_connect:.2f} s ({ingress_connect / f.bots * 1000:.1f} ms per bot)")  # fmt: skip
    print("    " + _cpu_line(f.connect_cpu))
    ingress_idle = f.idle_cpu.get("ingress", 0.0)
    print(f"  CPU idle for {IDLE_SECONDS:.0f} s with {f.bots} bots connected: ingress {ingress_idle:.2f} s "
          f"({ingress_idle / IDLE_SECONDS * 100:.1f} % of a core)")  # fmt: skip
    print("    " + _cpu_line(f.idle_cpu))
    m = f.dms
    print(f"  one DM to each bot: {len(m.e2e_ms)} replies   lost {m.lost + m.failed_posts}   duplicated "
          f"{m.duplicated}   misdirected {m.misdirected}   end to end p50 {percentile(m.e2e_ms, 50):.1f} ms   "
          f"p99 {percentile(m.e2e_ms, 99):.1f} ms")  # fmt: skip
    print(f"    (each bot's first reply: channels logs a REST client in per bot; channels RSS "
          f"{f.channels_rss[0]:.1f} → {f.channels_rss[1]:.1f} MiB)")  # fmt: skip


def _cpu_line(cpu: Mapping[str, float]) -> str:
    """ "name seconds, ..." biggest first, what no listed process used last."""
    ordered = sorted(cpu.items(), key=lambda item: (item[0] == OTHER, -item[1]))
    return ", ".join(f"{name} {seconds:.2f}" for name, seconds in ordered)


def side_by_side(
    wa: WhatsAppFigures, steady: Measured, burst: Measured, direct: float, rate: float, lost: int, duplicated: int
) -> None:
    """WhatsApp's and Discord's figures of this run next to each other."""

    def row(label: str, left: str, right: str) -> None:
        print(f"  {label:<44} {left:>16} {right:>16}")

    def e2e(m: Phase) -> str:
        return f"{percentile(m.e2e_ms, 50):.1f} / {percentile(m.e2e_ms, 99):.1f}"

    def cpu(m: Phase) -> dict[str, float]:
        return {(SIMULATOR if name.endswith("-sim") else name): s for name, s in m.cpu.items()}

    wa_cpu, dc_cpu = cpu(wa.burst), cpu(burst)
    print("\n== WhatsApp and Discord side by side (this run)")
    row("", "WhatsApp", "Discord")
    row(f"steady {rate:.0f}/s: end to end p50 / p99 ms", e2e(wa.steady), e2e(steady))
    row("burst: replies/s (hub capacity)", f"{wa.burst.replies_per_second:.1f}", f"{burst.replies_per_second:.1f}")
    row("direct pipeline: replies/s (no hub)", f"{wa.direct_replies_per_second:.0f}", f"{direct:.0f}")
    row("burst / direct pipeline", f"{wa.burst.replies_per_second / wa.direct_replies_per_second:.1%}",
        f"{burst.replies_per_second / direct:.1%}" if direct else "-")  # fmt: skip
    row("lost / duplicated (all phases)", f"{wa.lost} / {wa.duplicated}", f"{lost} / {duplicated}")
    row("CPU per message in the burst, ms", f"{per_message(sum(wa_cpu.values()), wa.burst_messages):.2f}",
        f"{per_message(sum(dc_cpu.values()), burst.messages):.2f}")  # fmt: skip
    for name in sorted(wa_cpu.keys() | dc_cpu.keys(), key=lambda n: -max(wa_cpu.get(n, 0.0), dc_cpu.get(n, 0.0))):
        row(f"  {name}", f"{per_message(wa_cpu.get(name, 0.0), wa.burst_messages):.2f}",
            f"{per_message(dc_cpu.get(name, 0.0), burst.messages):.2f}")  # fmt: skip
    print("  (WhatsApp's burst is a closed loop on the webhook acks; Discord's is posted as fast as the simulator")
    print("   takes it, since the gateway has no ack: both measure the hub working through a backlog)")


async def run_discord(
    mesh: LocalMesh, sim_url: str, agent_url: str, agent_key: str, pids: Mapping[str, int], options: Options,
    whatsapp: WhatsAppFigures,
) -> bool:  # fmt: skip
    """The Discord phases, reported; True when every message got exactly one reply and every bot connected."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=options.concurrency * 2)) as session:
        sim = Simulator(sim_url, session)
        bots, chats = await stage_message_bots(sim, options.instances, options.chats)
        started = time.monotonic()
        await create_instances(mesh, {name: bot["token"] for name, bot in bots.items()}, agent_url, agent_key, 4)
        ready = await wait_connected(mesh, sim, {n: b["id"] for n, b in bots.items()}, started, CONNECT_TIMEOUT)
        if ready.api_seconds is None:
            print(f"\nDiscord: only {ready.connected} of {len(bots)} bots connected; no Discord phases")
            return False
        dms = sum(1 for chat in chats if not chat.channel_id)
        print(f"\nDiscord: {len(bots)} bots connected; messages spread over {len(chats)} chats ({dms} DMs, "
              f"{len(chats) - dms} guild channels with a mention)")  # fmt: skip

        await measure(sim, chats, pids, len(chats), 10, 0.0, 30)  # warm-up: every chat once (DM channels, clients)
        direct_bot = await sim.add_bot("bench-direct-bot")  # no instance: no gateway session, nothing in the hub
        direct_guild = await sim.add_guild("bench-direct", direct_bot["id"], [f"room-{c}" for c in range(50)])
        guild_targets = [(str(direct_bot["token"]), str(c)) for c in direct_guild["channel_ids"].values()]
        direct, direct_lat, direct_failed = await direct_pipeline(
            agent_url, agent_key, f"{sim_url}/api/v10", guild_targets, options.messages, options.concurrency
        )
        steady = await measure(sim, chats, pids, options.messages, options.concurrency, options.rate,
                               options.timeout)  # fmt: skip
        burst = await measure(sim, chats, pids, options.messages, options.concurrency, 0.0, options.timeout)
        report(f"Discord steady arrivals: {options.messages} messages at {options.rate:.0f}/s (at most "
               f"{options.concurrency} posts in flight)", steady)  # fmt: skip
        report(f"Discord burst: {options.messages} messages posted as fast as the simulator takes them", burst)
        print("\n== Discord direct pipeline (agent call + REST message create, no hub, same concurrency)")
        print(f"  {direct:7.1f} replies/s   p50 {percentile(direct_lat, 50):7.1f} ms   "
              f"p99 {percentile(direct_lat, 99):7.1f} ms   failed {direct_failed}")  # fmt: skip

        await remove_instances(mesh, sim, {name: bot["id"] for name, bot in bots.items()})
        measured_fleet = await fleet(mesh, sim, pids, agent_url, agent_key, options.bots, CONNECT_TIMEOUT)
        report_fleet(measured_fleet)

    phases = [steady, burst, measured_fleet.dms]
    lost = sum(m.lost + m.failed_posts for m in phases)
    duplicated = sum(m.duplicated for m in phases)
    side_by_side(whatsapp, steady, burst, direct, options.rate, lost, duplicated)
    misdirected = sum(m.misdirected for m in phases)
    all_connected = measured_fleet.connected.api_seconds is not None
    checks = [
        ("nothing lost, nothing answered twice, nothing answered elsewhere",
         f"lost {lost}, duplicated {duplicated}, misdirected {misdirected}",
         lost == 0 and duplicated == 0 and misdirected == 0),
        (f"{options.bots} bots connected in one ingress process",
         f"{measured_fleet.connected.connected}/{options.bots}", all_connected),
    ]  # fmt: skip
    print("\n== Discord targets")
    for name, value, met in checks:
        print(f"  [{'met' if met else 'MISSED'}] {name}: {value}")
    return all(met for _, _, met in checks)
