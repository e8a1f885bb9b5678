"""Delivery guarantees through the real mesh: nothing lost, nothing answered twice, order kept per chat — under load,
when a service is SIGKILLed mid-run, when Evolution or the agent fail, and with two ingress replicas sharing one
PostgreSQL backlog."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections import defaultdict
from typing import Any

import aiohttp
import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from launcher.local_mesh import REPO_ROOT, free_port
from simulators.evolution import text_upsert
from tests.e2e.conftest import World
from tests.helpers.mesh import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

SENDERS = 20
PER_SENDER = 10


def chat_of(sender: int) -> str:
    return f"55219{sender:08d}@s.whatsapp.net"


async def post_until_acknowledged(session: aiohttp.ClientSession, url: str, envelope: dict[str, Any]) -> float:
    """POST like Evolution does: retry until a 2xx (a 503 or a refused connection while a service restarts).
    Returns the latency of the acknowledged attempt in ms."""
    deadline = time.monotonic() + 60
    while True:
        started = time.perf_counter()
        try:
            async with session.post(url, json=envelope) as response:
                await response.read()
                if 200 <= response.status < 300:
                    return (time.perf_counter() - started) * 1000
                assert response.status in (502, 503, 504), response.status
        except aiohttp.ClientError:
            pass
        assert time.monotonic() < deadline, "webhook never acknowledged"
        await asyncio.sleep(0.1)


async def conversation_burst(world: World, instance: str, *, during: Any = None) -> list[float]:
    """SENDERS chats in parallel, each posting PER_SENDER numbered messages one after the other (concurrency =
    SENDERS). `during(posted_count)` is awaited once after a third of the messages were acknowledged."""
    url = world.mesh.webhook_url(instance)
    acks: list[float] = []
    posted = 0
    fired = asyncio.Event()

    async with aiohttp.ClientSession() as session:

        async def sender(n: int) -> None:
            nonlocal posted
            for i in range(PER_SENDER):
                envelope = text_upsert(instance, chat_of(n), f"s{n}-m{i}", push_name=f"Sender {n}")
                acks.append(await post_until_acknowledged(session, url, envelope))
                posted += 1
                if during is not None and posted == SENDERS * PER_SENDER // 3 and not fired.is_set():
                    fired.set()
                    await during()

        await asyncio.gather(*(sender(n) for n in range(SENDERS)))
    return acks


def sent_texts(world: World, instance: str) -> dict[str, list[str]]:
    by_chat: dict[str, list[str]] = defaultdict(list)
    for message in world.evolution.sent:
        if message.instance == instance:
            by_chat[message.remote_jid].append(message.text)
    return by_chat


async def all_replies(world: World, instance: str, expected: int, timeout: float = 60) -> dict[str, list[str]]:
    async def probe() -> dict[str, list[str]] | None:
        replies = sent_texts(world, instance)
        return replies if sum(len(v) for v in replies.values()) >= expected else None

    await eventually(probe, timeout=timeout, every=0.2)
    await asyncio.sleep(1.5)  # anything arriving now would be a duplicate
    return sent_texts(world, instance)


def assert_exactly_once_in_order(replies: dict[str, list[str]]) -> None:
    assert sorted(replies) == sorted(chat_of(n) for n in range(SENDERS))
    for n in range(SENDERS):
        expected = [f"Echo: s{n}-m{i}" for i in range(PER_SENDER)]
        assert replies[chat_of(n)] == expected, f"chat {n}: {replies[chat_of(n)]}"


async def test_200_messages_from_20_senders_exactly_once_in_order(world: World) -> None:
    instance = await world.new_instance()
    acks = await conversation_burst(world, instance)
    assert len(acks) == SENDERS * PER_SENDER
    replies = await all_replies(world, instance, SENDERS * PER_SENDER)
    assert_exactly_once_in_order(replies)
    calls = [c["message"] for c in world.agent.calls if c["context"]["instance"] == instance]
    assert len(calls) == SENDERS * PER_SENDER
    for n in range(SENDERS):
        mine = [m for m in calls if m.startswith(f"s{n}-")]
        assert mine == [f"s{n}-m{i}" for i in range(PER_SENDER)]


@pytest.mark.parametrize("victim", ["router", "channels", "ingress"])
async def test_a_service_sigkilled_mid_run_loses_nothing_and_duplicates_nothing(world: World, victim: str) -> None:
    instance = await world.new_instance()
    world.agent.set_delay(0.02)
    old_pid = world.mesh.supervisor.pid(victim)

    async def kill() -> None:
        world.mesh.supervisor.kill(victim, signal.SIGKILL)

    try:
        await conversation_burst(world, instance, during=kill)
        replies = await all_replies(world, instance, SENDERS * PER_SENDER, timeout=90)
    finally:
        world.agent.set_delay(0)
    assert world.mesh.supervisor.pid(victim) not in (None, old_pid), f"{victim} was not restarted"
    assert_exactly_once_in_order(replies)


async def test_evolution_5xx_and_429_are_retried_and_the_reply_arrives_once(world: World) -> None:
    instance = await world.new_instance()
    chat = chat_of(900)
    async with aiohttp.ClientSession() as session:
        world.evolution.fail_next(2, status=500)
        await post_until_acknowledged(session, world.mesh.webhook_url(instance), text_upsert(instance, chat, "a"))
        await eventually(lambda: asyncio.sleep(0, sent_texts(world, instance).get(chat)), timeout=30)
        world.evolution.fail_next(1, status=429, retry_after=0.5)
        await post_until_acknowledged(session, world.mesh.webhook_url(instance), text_upsert(instance, chat, "b"))
        replies = await all_replies(world, instance, 2, timeout=30)
    assert replies[chat] == ["Echo: a", "Echo: b"]


async def test_evolution_400_ends_in_error_without_a_retry_storm(world: World) -> None:
    instance = await world.new_instance()
    chat = chat_of(901)
    world.evolution.fail_next(1, status=400, body={"status": 400, "error": "Bad Request",
                                                    "response": {"message": ["Error: not-authorized"]}})  # fmt: skip
    async with (
        aiohttp.ClientSession() as session,
        session.post(world.mesh.webhook_url(instance), json=text_upsert(instance, chat, "refused")) as response,
    ):
        ack = await response.json()

    trace = await trace_with_status(world, ack["trace_id"], "error")
    assert "not-authorized" in trace["error_message"]
    await asyncio.sleep(2)
    sends = [p for m, p in world.evolution.requests if p == f"/message/sendText/{instance}"]
    assert len(sends) == 1, sends
    assert sent_texts(world, instance) == {}


async def test_agent_down_dead_letter_then_redeliver_gives_exactly_one_reply(world: World) -> None:
    dead_agent = f"http://127.0.0.1:{free_port()}"
    instance = await world.new_instance(agent_api_url=dead_agent, agent_timeout=1)
    chat = chat_of(902)
    async with aiohttp.ClientSession() as session:
        await post_until_acknowledged(session, world.mesh.webhook_url(instance), text_upsert(instance, chat, "hello?"))

    async def dead_letter() -> dict[str, Any] | None:
        code, body = await world.mesh.get_json("/api/v1/dead-letters", instance_name=instance)
        assert code == 200, body
        return body["dead_letters"][0] if body["dead_letters"] else None

    letter = await eventually(dead_letter, timeout=60, every=0.5)
    assert letter["attempts"] == int(world.mesh.env["AUTOMAGIK_OMNI_INGRESS_MAX_ATTEMPTS"])
    assert "agent" in letter["last_error"]
    trace = await trace_with_status(world, letter["trace_id"], "error")
    assert "dead-lettered" in trace["error_message"]

    async with world.mesh.client.put(f"/api/v1/instances/{instance}", json={"agent_api_url": world.agent.url}) as r:
        assert r.status == 200, await r.text()
    async with world.mesh.client.post(f"/api/v1/dead-letters/{letter['id']}/redeliver") as r:
        assert r.status == 200, await r.text()
    replies = await all_replies(world, instance, 1, timeout=30)
    assert replies[chat] == ["Echo: hello?"]
    async with world.mesh.client.post(f"/api/v1/dead-letters/{letter['id']}/redeliver") as r:
        assert r.status == 409
    await trace_with_status(world, letter["trace_id"], "sent")


async def trace_with_status(world: World, trace_id: str, status: str) -> dict[str, Any]:
    """The trace once it shows `status` (spans reach the tracing service within a moment, not at once)."""

    async def probe() -> dict[str, Any] | None:
        code, trace = await world.mesh.get_json(f"/api/v1/traces/{trace_id}")
        return trace if code == 200 and trace["status"] == status else None

    return await eventually(probe, timeout=10)


async def test_webhooks_are_acknowledged_fast_while_the_router_is_frozen(world: World) -> None:
    instance = await world.new_instance()
    url = world.mesh.webhook_url(instance)
    await asyncio.sleep(0.5)  # ingress learns of the new instance from the router's watch stream
    world.mesh.supervisor.kill("router", signal.SIGSTOP)
    try:
        async with aiohttp.ClientSession() as session:
            acks = await asyncio.gather(
                *(post_until_acknowledged(session, url, text_upsert(instance, chat_of(n), f"held {n}"))
                  for n in range(50))
            )  # fmt: skip
        assert sent_texts(world, instance) == {}
    finally:
        world.mesh.supervisor.kill("router", signal.SIGCONT)
    assert max(acks) < 1000, f"slowest ack {max(acks):.0f} ms while the router was frozen"
    replies = await all_replies(world, instance, 50, timeout=60)
    assert sum(len(v) for v in replies.values()) == 50


@pytest.mark.parametrize("world", ["postgres"], indirect=True)
async def test_two_ingress_replicas_share_one_postgres_backlog(world: World) -> None:
    """Replicas share work through PostgreSQL's FOR UPDATE SKIP LOCKED (SQLite is one process per file).

    A backlog of 200 messages (one per chat, so all are claimable at once) builds up while the router is frozen;
    the first replica can hold at most its dispatch concurrency (64) of them, so a second replica started on the
    same database claims from the rest. Once the router thaws, every message must be answered exactly once."""
    port = free_port()
    env = {**world.mesh.env, "AUTOMAGIK_OMNI_INGRESS_GRPC_PORT": str(port),
           "AUTOMAGIK_OMNI_INGRESS_REPLICA_ID": "replica-b"}  # fmt: skip
    instance = await world.new_instance()
    await asyncio.sleep(0.5)  # ingress learns of the new instance from the router's watch stream
    chats = [chat_of(1000 + n) for n in range(SENDERS * PER_SENDER)]
    second: asyncio.subprocess.Process | None = None
    world.mesh.supervisor.kill("router", signal.SIGSTOP)
    try:
        async with aiohttp.ClientSession() as session:
            await asyncio.gather(
                *(post_until_acknowledged(session, world.mesh.webhook_url(instance),
                                          text_upsert(instance, chat, f"backlog {n}"))
                  for n, chat in enumerate(chats))
            )  # fmt: skip
        second = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.ingress", env=env, cwd=str(REPO_ROOT),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        await eventually(lambda: grpc_serving(port), timeout=30, every=0.2)
        await asyncio.sleep(1.0)  # a few dispatcher polls of the second replica
    finally:
        world.mesh.supervisor.kill("router", signal.SIGCONT)
    try:
        replies = await all_replies(world, instance, len(chats), timeout=90)
        assert dict(replies) == {chat: [f"Echo: backlog {n}"] for n, chat in enumerate(chats)}
        conn = await asyncpg.connect(world.mesh.env["AUTOMAGIK_OMNI_DATABASE_URL"])
        try:
            rows = await conn.fetch(
                "SELECT handled_by, count(*) AS n FROM omni_ingress.inbox WHERE instance_name = $1 "
                "AND state = 'handled' GROUP BY handled_by",
                instance,
            )
        finally:
            await conn.close()
        shares = {row["handled_by"]: row["n"] for row in rows}
        assert sum(shares.values()) == len(chats)
        assert shares.get("replica-b", 0) > 0, shares
        assert len(shares) == 2, shares
    finally:
        if second is not None:
            second.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(second.wait(), 15)
            except TimeoutError:
                second.kill()
                await second.wait()


async def grpc_serving(port: int) -> bool:
    """True when the gRPC health service on `port` answers SERVING."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            response = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
        except grpc.aio.AioRpcError:
            return False
        return bool(response.status == health_pb2.HealthCheckResponse.SERVING)
