"""Users and sessions through the real mesh: two WhatsApp messages from one phone make one user with a session;
the agent's own session id comes back on the next turn; a reset gives the chat a new session id; deleting the user
erases it with its traces and inbox copies. On SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from simulators.evolution import text_upsert
from tests.e2e.conftest import World
from tests.helpers.mesh import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

PHONE = "5521997654321"
JID = f"{PHONE}@s.whatsapp.net"


@pytest_asyncio.fixture(loop_scope="module")
async def api(world: World) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(
        base_url=world.mesh.base_url, headers={"x-api-key": world.mesh.api_key}
    ) as session:
        yield session


async def say(world: World, instance: str, text: str) -> str:
    """Post a message from PHONE and wait for its reply; returns its trace id."""
    before = len([m for m in world.evolution.sent if m.instance == instance])
    async with (
        aiohttp.ClientSession() as session,
        session.post(world.mesh.webhook_url(instance), json=text_upsert(instance, JID, text)) as response,
    ):
        body = await response.json()
        assert response.status == 200, body
    await eventually(
        lambda: asyncio.sleep(0, len([m for m in world.evolution.sent if m.instance == instance]) > before or None)
    )
    return str(body["trace_id"])


def calls_of(world: World, instance: str) -> list[dict[str, Any]]:
    return [c for c in world.agent.calls if c["context"]["instance"] == instance]


async def get(api: aiohttp.ClientSession, path: str, **params: Any) -> tuple[int, Any]:
    async with api.get(path, params=params) as response:
        return response.status, await response.json()


async def test_a_person_is_one_user_whose_sessions_can_be_reset_and_who_can_be_erased(
    world: World, api: aiohttp.ClientSession
) -> None:
    instance = await world.new_instance(session_id_prefix="shop-")
    world.agent.set_reply(lambda body: {"text": "ok", "session_id": f"agent-{body['session_id'][:8]}"})
    try:
        traces = [await say(world, instance, "Oi"), await say(world, instance, "Tudo bem?")]
    finally:
        world.agent.set_reply(None)
    first, second = calls_of(world, instance)
    assert first["session_name"] == f"shop-+{PHONE}"
    assert "agent_session_id" not in first
    assert second["agent_session_id"] == f"agent-{first['session_id'][:8]}"  # the agent's own id, sent back

    code, listing = await get(api, "/api/v1/users", instance_name=instance)
    assert code == 200
    assert listing["total_count"] == 1
    user_id = listing["users"][0]["id"]
    assert user_id == first["user_id"]
    code, user = await get(api, f"/api/v1/users/{user_id}")
    assert code == 200
    assert user["message_count"] == 2
    assert user["phone_number"] == f"+{PHONE}"
    assert [e["external_id"] for e in user["external_ids"]] == [JID]
    (session,) = user["sessions"]
    assert session["id"] == first["session_id"]
    assert session["message_count"] == 2
    assert session["agent_session_id"] == f"agent-{first['session_id'][:8]}"

    async with api.post(f"/api/v1/sessions/{session['id']}/reset") as response:
        assert response.status == 200
        reset = await response.json()
    assert reset["id"] != session["id"]
    traces.append(await say(world, instance, "De novo"))
    third = calls_of(world, instance)[-1]
    assert third["session_id"] == reset["id"]
    assert third["user_id"] == user_id
    assert "agent_session_id" not in third

    # Every trace is stored before the erasure, so none arrives after it.
    for trace_id in traces:
        await eventually(_trace_done(api, trace_id), timeout=15)
    async with api.delete(f"/api/v1/users/{user_id}") as response:
        assert response.status == 200, await response.text()
        erased = await response.json()
    assert erased["sessions_deleted"] == 1
    assert erased["traces_deleted"] == 3
    assert erased["inbox_messages_deleted"] == 3  # the inbox keeps handled messages for a while: theirs go now
    assert (await get(api, f"/api/v1/users/{user_id}"))[0] == 404
    for trace_id in traces:
        assert (await get(api, f"/api/v1/traces/{trace_id}"))[0] == 404
    code, listing = await get(api, "/api/v1/sessions", instance_name=instance)
    assert (code, listing["total_count"]) == (200, 0)


def _trace_done(api: aiohttp.ClientSession, trace_id: str) -> Callable[[], Awaitable[bool | None]]:
    """A probe: true once the trace is stored as sent with the spans of every service (a span exported after the
    erasure would store that trace again, partly: erasure covers what tracing holds when it runs)."""

    async def probe() -> bool | None:
        code, body = await get(api, f"/api/v1/traces/{trace_id}")
        if code != 200 or body["status"] != "sent":
            return None
        names = [span["name"] for span in body["spans"]]
        return all(any(word in name for name in names) for word in ("accept", "dispatch", "agent", "send")) or None

    return probe


async def test_an_erasure_right_after_a_reply_stays_erased_when_the_spans_arrive(
    world: World, api: aiohttp.ClientSession
) -> None:
    instance = await world.new_instance()
    trace_id = await say(world, instance, "Apaguem meus dados, por favor")
    code, listing = await get(api, "/api/v1/users", instance_name=instance)
    assert code == 200
    (user,) = listing["users"]
    # At once: some of the message's spans are still in the services' export queues.
    async with api.delete(f"/api/v1/users/{user['id']}") as response:
        assert response.status == 200, await response.text()
    await asyncio.sleep(3)  # longer than any service takes to export its spans
    assert (await get(api, f"/api/v1/traces/{trace_id}"))[0] == 404
    code, traces = await get(api, "/api/v1/traces", instance_name=instance, all_time="true")
    assert (code, traces["total_count"]) == (200, 0)
