"""RouteMessage through the real server, with a real echo agent and a fake channels service."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2
from omni.common.v1 import channel_pb2
from omni.router.v1 import instance_pb2, router_service_pb2

from servicekit.errors import FailedPreconditionError, UnavailableError
from servicekit.retention import delivery_retention
from servicekit.settings import MeshSettings
from services.router.storage import RouteRepository
from tests.router.conftest import AGENT_KEY, TYPING_DELAY, Harness, inbound, wait_for, whatsapp_instance

SENT = channel_pb2.MESSAGE_OUTCOME_SENT
ERROR = channel_pb2.MESSAGE_OUTCOME_ERROR


async def setup_instance(h: Harness, **overrides: Any) -> None:
    await h.stub.CreateInstance(
        router_service_pb2.CreateInstanceRequest(instance=whatsapp_instance(h.agent.url, **overrides))
    )


async def route(
    h: Harness, message: Any, *, attempt: int = 1, final: bool = False
) -> router_service_pb2.RouteMessageResponse:
    return await h.stub.RouteMessage(
        router_service_pb2.RouteMessageRequest(message=message, attempt=attempt, final_attempt=final), timeout=30
    )


def route_span_attributes(h: Harness) -> dict[str, Any]:
    spans = h.spans("router.route")
    assert spans
    return dict(spans[-1].attributes or {})


async def test_a_slow_agent_gets_a_typing_indicator_a_fast_one_does_not(harness: Harness) -> None:
    await setup_instance(harness)
    harness.agent.set_delay(TYPING_DELAY * 2)
    try:
        assert (await route(harness, inbound(text="slow", message_id="slow-1"))).outcome == SENT
    finally:
        harness.agent.set_delay(0)
    await wait_for(lambda: len(harness.channels.presences) == 1)
    assert harness.channels.presences[0].chat_id == "5511999990001@s.whatsapp.net"
    assert (await route(harness, inbound(text="fast", message_id="fast-1"))).outcome == SENT
    assert len(harness.channels.presences) == 1


async def test_reply_reaches_the_chat_with_the_contract_body(harness: Harness) -> None:
    await setup_instance(harness)
    response = await route(harness, inbound(text="Hello!"))

    assert response.outcome == SENT
    assert response.user_id
    assert response.session_id
    assert list(response.sent_message_ids) == ["wamid-1"]

    [body] = harness.agent.calls
    assert body == {
        "user_id": response.user_id,
        "session_id": response.session_id,
        "session_name": "+5511999990001",
        "message": "Hello!",
        "message_type": "text",
        "session_origin": "whatsapp",
        "agent": "support-bot",
        "user": {
            "phone_number": "+5511999990001",
            "email": None,
            "user_data": {"name": "Maria", "whatsapp_id": "5511999990001@s.whatsapp.net"},
        },
        "media": [],
        "context": {
            "channel": "whatsapp",
            "instance": "acme",
            "chat_id": "5511999990001@s.whatsapp.net",
            "message_id": "WA-msg-1",
            "is_group": False,
            "quoted_message": None,
        },
    }
    [headers] = harness.agent.headers
    assert headers["x-api-key"] == AGENT_KEY
    assert headers["content-type"] == "application/json"
    agent_span = harness.spans("agent.call")[0]
    trace_id = format(agent_span.context.trace_id, "032x")
    span_id = format(agent_span.context.span_id, "016x")
    assert headers["traceparent"].startswith(f"00-{trace_id}-{span_id}-")
    assert agent_span.attributes is not None
    assert agent_span.attributes["omni.step"] == "agent_call"
    assert agent_span.attributes["http.response.status_code"] == 200
    assert agent_span.attributes["omni.agent.attempts"] == 1

    [request] = harness.channels.requests
    assert request.instance_name == "acme"
    assert request.chat_id == "5511999990001@s.whatsapp.net"
    assert request.idempotency_key == "msg-1"
    assert [p.text for p in request.parts] == ["Echo: Hello!"]
    assert harness.channels.presences == [], "a fast agent needs no typing indicator"

    attributes = route_span_attributes(harness)
    assert attributes["omni.status"] == "sent"
    assert attributes["omni.instance_name"] == "acme"
    assert attributes["omni.message_id"] == "msg-1"
    assert attributes["omni.user_id"] == response.user_id
    assert attributes["omni.session_id"] == response.session_id
    assert attributes["omni.attempt"] == 1
    assert json.loads(str(attributes["omni.payload.agent_request"]))["message"] == "Hello!"
    assert json.loads(str(attributes["omni.payload.agent_response"]))["text"] == "Echo: Hello!"
    assert json.loads(str(attributes["omni.payload.outgoing"]))["parts"] == [{"text": "Echo: Hello!"}]
    assert agent_span.parent is not None
    assert agent_span.parent.span_id == harness.spans("router.route")[0].context.span_id
    for span in harness.exporter.get_finished_spans():
        assert AGENT_KEY not in json.dumps(dict(span.attributes or {}))


async def test_repeat_is_idempotent(harness: Harness) -> None:
    await setup_instance(harness)
    first = await route(harness, inbound())
    second = await route(harness, inbound(), attempt=2)
    assert second.outcome == SENT
    assert second.user_id == first.user_id
    assert list(second.sent_message_ids) == list(first.sent_message_ids)
    assert len(harness.agent.calls) == 1
    assert len(harness.channels.requests) == 1
    user = await harness.db.fetchrow("SELECT message_count, display_name FROM users WHERE id = $1", first.user_id)
    assert user == {"message_count": 1, "display_name": "Maria"}


async def test_long_reply_is_split_into_parts(harness: Harness) -> None:
    await setup_instance(harness)
    paragraphs = ["p1 " * 200, "p2 " * 200, "p3 " * 10]
    harness.agent.set_reply(lambda body: {"message": "\n\n".join(paragraphs)})
    response = await route(harness, inbound())
    assert response.outcome == SENT
    [request] = harness.channels.requests
    assert [p.text for p in request.parts] == [p.strip() for p in paragraphs]
    assert len(response.sent_message_ids) == 3


async def test_empty_reply_sends_nothing(harness: Harness) -> None:
    await setup_instance(harness)
    harness.agent.set_reply(lambda body: {"text": ""})
    response = await route(harness, inbound())
    assert response.outcome == SENT
    assert harness.channels.requests == []
    assert "omni.payload.outgoing" not in route_span_attributes(harness)


async def test_agent_5xx_twice_then_ok_within_budget(harness: Harness) -> None:
    await setup_instance(harness)
    harness.agent.fail_next(2, status=500)
    response = await route(harness, inbound())
    assert response.outcome == SENT
    assert len(harness.agent.calls) == 3
    assert harness.channels.delivered == ["Echo: Hello!"]
    assert harness.spans("agent.call")[0].attributes["omni.agent.attempts"] == 3  # type: ignore[index]


async def test_an_agent_that_keeps_failing_ends_the_attempt_after_three_tries_not_at_agent_timeout(
    harness: Harness,
) -> None:
    await setup_instance(harness, agent_timeout_seconds=60)
    harness.agent.fail_next(1_000, status=500)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await route(harness, inbound())
    assert loop.time() - started < 5  # not the 60 s budget: the inbox's retry, shown on the trace, takes over
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "agent unreachable after 3 tries" in (err.value.details() or "")
    assert len(harness.agent.calls) == 3
    assert "HTTP 500" in str(route_span_attributes(harness)["omni.attempt_error"])


async def test_agent_4xx_is_a_final_error(harness: Harness) -> None:
    await setup_instance(harness)
    harness.agent.fail_next(1, status=422, body='{"detail": "bad input"}')
    response = await route(harness, inbound())
    assert response.outcome == ERROR
    assert response.error_message.startswith("agent returned HTTP 422")
    assert harness.channels.requests == []
    attributes = route_span_attributes(harness)
    assert attributes["omni.status"] == "error"
    assert "422" in str(attributes["omni.error_message"])
    again = await route(harness, inbound(), attempt=2)
    assert again.outcome == ERROR
    assert len(harness.agent.calls) == 1


async def test_agent_invalid_json_is_a_final_error_with_fallback(harness: Harness) -> None:
    await setup_instance(harness, fallback_text="Sorry, try again later.")
    harness.agent.fail_next(1, status=200, body="not json")
    response = await route(harness, inbound())
    assert response.outcome == ERROR
    assert "invalid JSON" in response.error_message
    [request] = harness.channels.requests
    assert request.idempotency_key == "msg-1:fallback"
    assert [p.text for p in request.parts] == ["Sorry, try again later."]


async def test_agent_down_is_unavailable_without_status(harness: Harness) -> None:
    await setup_instance(harness, agent_timeout_seconds=1)
    await harness.agent.stop()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await route(harness, inbound())
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "agent unreachable" in (err.value.details() or "")
    assert "omni.status" not in route_span_attributes(harness)
    assert harness.channels.requests == []


async def test_agent_timeout_is_unavailable_and_fallback_on_final_attempt(harness: Harness) -> None:
    await setup_instance(harness, agent_timeout_seconds=1, fallback_text="We are having trouble.")
    harness.agent.set_delay(3)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await route(harness, inbound(), attempt=1)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert harness.channels.requests == []  # not the final attempt: no fallback yet

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await route(harness, inbound(), attempt=5, final=True)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    [request] = harness.channels.requests
    assert request.idempotency_key == "msg-1:fallback"
    assert [p.text for p in request.parts] == ["We are having trouble."]


async def test_channel_unavailable_then_retry_reuses_the_stored_reply(harness: Harness) -> None:
    await setup_instance(harness)
    harness.channels.fail_next(UnavailableError("evolution is down"))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await route(harness, inbound())
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "channel unavailable" in (err.value.details() or "")

    harness.agent.set_reply(lambda body: {"text": "a different answer"})
    response = await route(harness, inbound(), attempt=2)
    assert response.outcome == SENT
    assert len(harness.agent.calls) == 1
    assert [r.idempotency_key for r in harness.channels.requests] == ["msg-1", "msg-1"]
    assert harness.channels.delivered == ["Echo: Hello!"]


async def test_channel_rejection_is_a_final_error(harness: Harness) -> None:
    await setup_instance(harness)
    harness.channels.fail_next(FailedPreconditionError("number not on WhatsApp", reason="CHANNEL_REJECTED"))
    response = await route(harness, inbound())
    assert response.outcome == ERROR
    assert "number not on WhatsApp" in response.error_message
    again = await route(harness, inbound(), attempt=2)
    assert again.outcome == ERROR
    assert len(harness.channels.requests) == 1


async def test_lid_and_phone_of_one_person_are_one_user(harness: Harness) -> None:
    await setup_instance(harness)
    lid = "123456789012345@lid"
    phone_jid = "5511988887777@s.whatsapp.net"
    first = await route(harness, inbound("m1", chat_id=lid, sender_id=lid, alt_id=phone_jid))
    second = await route(harness, inbound("m2", chat_id=phone_jid, sender_id=phone_jid))
    third = await route(harness, inbound("m3", chat_id=lid, sender_id=lid))
    assert first.user_id == second.user_id == third.user_id
    assert harness.agent.calls[0]["user"]["phone_number"] == "+5511988887777"
    assert harness.agent.calls[0]["session_name"] == "+5511988887777"
    other = await route(
        harness, inbound("m4", chat_id="5511000000000@s.whatsapp.net", sender_id="5511000000000@s.whatsapp.net")
    )
    assert other.user_id != first.user_id
    user = await harness.db.fetchrow("SELECT message_count FROM users WHERE id = $1", first.user_id)
    assert user == {"message_count": 3}


async def test_group_message_replies_to_the_group(harness: Harness) -> None:
    await setup_instance(harness)
    group = "120363025555555555@g.us"
    response = await route(
        harness,
        inbound(chat_id=group, sender_id="98765@lid", phone="+5511977776666", is_group=True, text="hi all"),
    )
    assert response.outcome == SENT
    [request] = harness.channels.requests
    assert request.chat_id == group
    [body] = harness.agent.calls
    assert body["context"]["is_group"] is True
    assert body["context"]["chat_id"] == group
    assert body["session_name"] == group
    assert body["user"]["phone_number"] == "+5511977776666"
    session = await harness.db.fetchrow("SELECT chat_id, session_name FROM sessions WHERE id = $1", response.session_id)
    assert session == {"chat_id": group, "session_name": group}


async def test_inactive_instance_is_ignored(harness: Harness) -> None:
    await setup_instance(harness, is_active=False)
    response = await route(harness, inbound())
    assert response.outcome == channel_pb2.MESSAGE_OUTCOME_IGNORED
    assert response.error_message == "instance inactive"
    assert harness.agent.calls == []
    assert route_span_attributes(harness)["omni.status"] == "ignored"


async def test_unknown_instance_and_missing_ids(harness: Harness) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await route(harness, inbound(instance="nobody"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await route(harness, inbound(message_id=""))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_delete_instance_removes_users_and_sessions(harness: Harness) -> None:
    await setup_instance(harness)
    await route(harness, inbound())
    assert await harness.db.fetchval("SELECT COUNT(*) FROM users") == 1
    await harness.stub.DeleteInstance(router_service_pb2.DeleteInstanceRequest(name="acme"))
    for table in ("users", "user_identities", "sessions"):
        assert await harness.db.fetchval(f"SELECT COUNT(*) FROM {table}") == 0


async def test_updated_agent_key_is_used(harness: Harness) -> None:
    await setup_instance(harness)
    harness.agent.api_key = "rotated-key-0001"
    await harness.stub.UpdateInstance(
        router_service_pb2.UpdateInstanceRequest(
            instance=instance_pb2.Instance(
                name="acme", agent_api_key=instance_pb2.SecretValue(value="rotated-key-0001")
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["agent_api_key"]),
        )
    )
    response = await route(harness, inbound())
    assert response.outcome == SENT
    assert harness.agent.headers[-1]["x-api-key"] == "rotated-key-0001"


async def test_a_recreated_instance_starts_with_new_users_and_sessions(harness: Harness) -> None:
    """Ids derive from the instance id: a new instance of the same name is another tenant, and no router replica's
    memory of the old ids applies to it."""
    await setup_instance(harness)
    first = await route(harness, inbound(text="before", message_id="before-1"))
    await harness.stub.DeleteInstance(router_service_pb2.DeleteInstanceRequest(name="acme"))
    assert await harness.db.fetchval("SELECT COUNT(*) FROM users") == 0
    await setup_instance(harness)
    again = await route(harness, inbound(text="after", message_id="after-1"))
    assert again.outcome == SENT
    assert again.user_id != first.user_id
    assert again.session_id != first.session_id
    user = await harness.db.fetchrow("SELECT message_count FROM users WHERE id = $1", again.user_id)
    assert user is not None
    assert user["message_count"] == 1
    assert await harness.db.fetchval("SELECT COUNT(*) FROM sessions WHERE id = $1", again.session_id) == 1


async def test_an_instance_change_applies_to_the_next_message(harness: Harness) -> None:
    await setup_instance(harness)
    await route(harness, inbound(text="one", message_id="change-1"))
    await harness.stub.UpdateInstance(
        router_service_pb2.UpdateInstanceRequest(
            instance=whatsapp_instance(harness.agent.url, default_agent="other-agent"),
            update_mask=field_mask_pb2.FieldMask(paths=["default_agent"]),
        )
    )
    await route(harness, inbound(text="two", message_id="change-2"))
    assert [c["agent"] for c in harness.agent.calls][-1] == "other-agent"


async def test_retention_deletes_old_finished_records_and_keeps_unfinished_ones(harness: Harness) -> None:
    await setup_instance(harness)
    await route(harness, inbound("old-done", chat_id="5511999990002@s.whatsapp.net"))
    await route(harness, inbound("recent-done", chat_id="5511999990003@s.whatsapp.net"))
    harness.channels.fail_next(UnavailableError("evolution is down"))
    with pytest.raises(grpc.aio.AioRpcError):
        await route(harness, inbound("old-unfinished", chat_id="5511999990004@s.whatsapp.net"))
    await harness.db.execute(
        "UPDATE routes SET created_at = created_at - $1 WHERE message_id <> 'recent-done'", 40 * 86_400.0
    )
    sweep = delivery_retention("route records", RouteRepository(harness.db).purge_finished, MeshSettings())
    assert await sweep.run_once() == 1
    remaining = await harness.db.fetch("SELECT message_id FROM routes ORDER BY message_id")
    assert [row["message_id"] for row in remaining] == ["old-unfinished", "recent-done"]
    # The unfinished one is redelivered later: its stored agent reply is reused, the agent is not asked again.
    again = await route(harness, inbound("old-unfinished", chat_id="5511999990004@s.whatsapp.net"), attempt=2)
    assert again.outcome == SENT
    assert len(harness.agent.calls) == 3
