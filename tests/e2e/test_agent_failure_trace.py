"""An agent answering 500, through the real mesh: the message's trace shows the failed attempt at once (error,
attempt count, next retry time) while the inbox retries, and ends `error` when the instance's agent_max_attempts is
spent, with its fallback text sent and no further agent call; then the operator's trace queries find it."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import aiohttp
import pytest

from examples.agent_echo import EchoAgent
from simulators.evolution import text_upsert
from tests.e2e.conftest import AGENT_KEY, World
from tests.helpers.mesh import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

CHAT = "5521900000777@s.whatsapp.net"
AGENT_TIMEOUT = 2
"""Seconds of one delivery attempt's agent call (the router's agent client retries the 500s within it): the second
attempt lasts this long, the window in which the trace must already show the first attempt's failure."""


async def _trace(world: World, trace_id: str) -> dict[str, Any] | None:
    code, trace = await world.mesh.get_json(f"/api/v1/traces/{trace_id}")
    return trace if code == 200 else None


async def test_agent_500_shows_on_the_trace_at_once_and_ends_error_after_the_budget(world: World) -> None:
    failing = EchoAgent(api_key=AGENT_KEY)  # its own, so the injected failures touch no other test
    await failing.start()
    try:
        await _agent_failure_flow(world, failing)
    finally:
        await failing.stop()


async def _agent_failure_flow(world: World, agent: EchoAgent) -> None:
    agent.fail_next(100_000, status=500)
    instance = await world.new_instance(
        agent_api_url=agent.url,
        agent_timeout=AGENT_TIMEOUT,
        agent_max_attempts=2,
        fallback_text="Sorry, try again later.",
    )
    await asyncio.sleep(0.5)  # ingress learns of the new instance from the router's watch stream
    async with (
        aiohttp.ClientSession() as session,
        session.post(world.mesh.webhook_url(instance), json=text_upsert(instance, CHAT, "are you there?")) as response,
    ):
        assert response.status == 200
        trace_id = (await response.json())["trace_id"]

    async def retrying() -> dict[str, Any] | None:
        trace = await _trace(world, trace_id)
        # The router's span brings the error, ingress's dispatch span the retry time: each service exports its own.
        if trace and trace["status"] == "processing" and trace["error_message"] and trace["next_retry_at"]:
            return trace
        return None

    shown = await eventually(retrying, timeout=AGENT_TIMEOUT + 3, every=0.1)
    assert "HTTP 500" in shown["error_message"]
    assert shown["attempts"] == 1
    assert datetime.fromisoformat(shown["next_retry_at"]) >= datetime.fromisoformat(shown["created_at"])

    async def final() -> dict[str, Any] | None:
        trace = await _trace(world, trace_id)
        return trace if trace and trace["status"] == "error" else None

    ended = await eventually(final, timeout=AGENT_TIMEOUT + 10, every=0.2)
    assert ended["error_message"].startswith("agent failed after 2 attempts")
    assert (ended["attempts"], ended["next_retry_at"], ended["error_stage"]) == (2, None, "agent")
    assert ended["message_type"] == "text"

    calls = len(agent.calls)
    await asyncio.sleep(1.5)  # no third attempt: the budget ended the retries
    assert len(agent.calls) == calls
    fallbacks = [m.text for m in world.evolution.sent if m.instance == instance]
    assert fallbacks == ["Sorry, try again later."]

    # The operator's queries find it: by status, sender, text search, and in the analytics of the instance.
    code, page = await world.mesh.get_json(
        "/api/v1/traces", instance_name=instance, status="error", sender=CHAT, q="ARE YOU"
    )
    assert code == 200, page
    assert [t["trace_id"] for t in page["traces"]] == [trace_id]
    assert page["total_count"] == 1
    code, summary = await world.mesh.get_json("/api/v1/traces/analytics/summary", instance_name=instance)
    assert code == 200, summary
    assert summary["total"] == 1
    (stage,) = summary["errors_by_stage"]
    assert (stage["key"], stage["count"], stage["error_count"]) == ("agent", 1, 1)
    code, payloads = await world.mesh.get_json(f"/api/v1/traces/{trace_id}/payloads")
    assert code == 200
    assert payloads["agent_request"] is not None
