"""The echo agent, through real HTTP: the agent contract, auth and failure injection."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from examples.agent_echo import EchoAgent

REQUEST = {
    "user_id": "u-1",
    "session_id": "s-1",
    "session_name": "+5521991234567",
    "message": "Hello!",
    "message_type": "text",
    "session_origin": "whatsapp",
    "agent": "default",
    "user": {"phone_number": "+5521991234567", "email": None, "user_data": {"name": "Maria"}},
    "media": [],
    "context": {"channel": "whatsapp", "instance": "acme-support", "chat_id": "5521991234567@s.whatsapp.net"},
}
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture
async def keyed_agent() -> AsyncIterator[EchoAgent]:
    agent = EchoAgent(api_key="agent-key", prefix="Bot: ")
    await agent.start()
    try:
        yield agent
    finally:
        await agent.stop()


async def chat(
    session: aiohttp.ClientSession, agent: EchoAgent, body: Any = REQUEST, headers: dict[str, str] | None = None
) -> tuple[int, str]:
    data = body if isinstance(body, bytes) else None
    async with session.post(
        agent.url + "/api/agent/chat", json=None if data else body, data=data, headers=headers or {}
    ) as response:
        return response.status, await response.text()


async def test_echoes_with_session_and_user(agent: EchoAgent, session: aiohttp.ClientSession) -> None:
    async with session.post(agent.url + "/api/agent/chat", json=REQUEST, headers={"traceparent": TRACEPARENT}) as r:
        assert r.status == 200
        assert await r.json() == {"text": "Echo: Hello!", "session_id": "s-1", "user_id": "u-1"}
    assert agent.calls == [REQUEST]
    assert agent.headers[0]["traceparent"] == TRACEPARENT


async def test_api_key_is_required_when_configured(keyed_agent: EchoAgent, session: aiohttp.ClientSession) -> None:
    status, text = await chat(session, keyed_agent)
    assert status == 401
    assert "API key" in text
    assert (await chat(session, keyed_agent, headers={"x-api-key": "nope"}))[0] == 401
    status, text = await chat(session, keyed_agent, headers={"x-api-key": "agent-key"})
    assert status == 200
    assert '"Bot: Hello!"' in text
    assert [h.get("x-api-key") for h in keyed_agent.headers] == [None, "nope", "agent-key"]
    assert len(keyed_agent.calls) == 1


async def test_invalid_json_is_400(agent: EchoAgent, session: aiohttp.ClientSession) -> None:
    assert (await chat(session, agent, b"{not json"))[0] == 400
    assert (await chat(session, agent, [1, 2]))[0] == 400
    assert agent.calls == []


async def test_failure_injection_delay_and_custom_replies(agent: EchoAgent, session: aiohttp.ClientSession) -> None:
    agent.fail_next(1, status=503)
    agent.fail_next(1, status=200, body="not json")
    assert (await chat(session, agent))[0] == 503
    assert await chat(session, agent) == (200, "not json")
    assert (await chat(session, agent))[0] == 200

    agent.set_delay(0.3)
    with pytest.raises(TimeoutError):
        async with session.post(
            agent.url + "/api/agent/chat", json=REQUEST, timeout=aiohttp.ClientTimeout(total=0.05)
        ) as response:
            await response.read()
    agent.set_delay(0)

    agent.set_reply(lambda body: {"message": body["message"].upper(), "media": []})
    async with session.post(agent.url + "/api/agent/chat", json=REQUEST) as response:
        assert await response.json() == {"message": "HELLO!", "media": []}
    agent.set_reply(lambda body: "<html>")
    assert await chat(session, agent) == (200, "<html>")
    agent.set_reply(None)
    assert '"Echo: Hello!"' in (await chat(session, agent))[1]
