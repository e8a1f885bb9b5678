"""The instance's agent retry budget (agent_max_attempts): the attempt that reaches it ends the message in error (with
the fallback text) instead of UNAVAILABLE, so ingress stops retrying; each earlier failure is on the route span."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from omni.common.v1 import channel_pb2
from omni.router.v1 import router_service_pb2

from servicekit import trace_attributes as ta
from tests.router.conftest import Harness, inbound, whatsapp_instance

ERROR = channel_pb2.MESSAGE_OUTCOME_ERROR


async def _route(h: Harness, attempt: int) -> router_service_pb2.RouteMessageResponse:
    return await h.stub.RouteMessage(
        router_service_pb2.RouteMessageRequest(message=inbound(text="hi?"), attempt=attempt), timeout=30
    )


def _last_route_span(h: Harness) -> dict[str, Any]:
    return dict(h.spans("router.route")[-1].attributes or {})


async def test_the_attempt_reaching_agent_max_attempts_is_a_final_error(harness: Harness) -> None:
    instance = whatsapp_instance(harness.agent.url, agent_timeout_seconds=1, fallback_text="Sorry, later.")
    instance.agent_max_attempts = 2
    await harness.stub.CreateInstance(router_service_pb2.CreateInstanceRequest(instance=instance))
    harness.agent.fail_next(1_000, status=500)

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _route(harness, attempt=1)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    first = _last_route_span(harness)
    assert "HTTP 500" in first[ta.ATTEMPT_ERROR]
    assert ta.STATUS not in first
    assert (first[ta.MESSAGE_TEXT], first[ta.HAS_MEDIA]) == ("hi?", False)
    assert harness.channels.requests == []

    response = await _route(harness, attempt=2)
    assert response.outcome == ERROR
    assert response.error_message.startswith("agent failed after 2 attempts")
    final = _last_route_span(harness)
    assert (final[ta.STATUS], final[ta.ERROR_STAGE]) == ("error", "agent")
    [fallback] = harness.channels.requests
    assert [p.text for p in fallback.parts] == ["Sorry, later."]


async def test_zero_leaves_the_budget_to_the_inbox(harness: Harness) -> None:
    await harness.stub.CreateInstance(
        router_service_pb2.CreateInstanceRequest(instance=whatsapp_instance(harness.agent.url, agent_timeout_seconds=1))
    )
    harness.agent.fail_next(1_000, status=500)
    for attempt in (1, 2, 3):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await _route(harness, attempt=attempt)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
