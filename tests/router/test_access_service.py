"""AccessService on the real router (SQLite and PostgreSQL): rules CRUD and scopes, propagation to another replica's
cache, and RouteMessage refusing blocked senders without calling the agent."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest
from omni.common.v1 import channel_pb2
from omni.router.v1 import access_service_pb2, access_service_pb2_grpc, router_service_pb2

from servicekit.grpc_clients import open_channel
from services.router.access_store import AccessRuleCache, AccessRuleRepository
from tests.router.conftest import Harness, inbound, whatsapp_instance

ADMIN_KEY = "router-access-admin-key"
ALLOW = access_service_pb2.RULE_TYPE_ALLOW
BLOCK = access_service_pb2.RULE_TYPE_BLOCK
BLOCKED = channel_pb2.MESSAGE_OUTCOME_BLOCKED
SENT = channel_pb2.MESSAGE_OUTCOME_SENT


@pytest.fixture(autouse=True)
def admin_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """The harness's router reads its admin key from the environment (set before the harness starts)."""
    monkeypatch.setenv("AUTOMAGIK_OMNI_API_KEY", ADMIN_KEY)


def key(value: str) -> tuple[tuple[str, str]]:
    return (("x-api-key", value),)


@asynccontextmanager
async def access_client(harness: Harness) -> AsyncIterator[Any]:
    """An AccessService stub without mesh credential: calls carry an API key, as the REST gateway's callers do."""
    channel = open_channel(f"127.0.0.1:{harness.port}", tracing=False, mesh=None)
    try:
        yield access_service_pb2_grpc.AccessServiceStub(channel)
    finally:
        await channel.close(None)


async def code_of(call: Any) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def create_instance(harness: Harness, name: str = "acme", **overrides: Any) -> None:
    await harness.stub.CreateInstance(
        router_service_pb2.CreateInstanceRequest(instance=whatsapp_instance(harness.agent.url, name=name, **overrides))
    )


async def add_rule(
    client: Any, pattern: str, kind: Any, instance: str = "", api_key: str = ADMIN_KEY, scope: Any = 0
) -> access_service_pb2.AccessRule:
    rule = access_service_pb2.AccessRule(instance_name=instance, pattern=pattern, rule_type=kind, scope=scope)
    answer: access_service_pb2.CreateRuleResponse = await client.CreateRule(
        access_service_pb2.CreateRuleRequest(rule=rule), metadata=key(api_key)
    )
    return answer.rule


async def route(harness: Harness, message: Any) -> router_service_pb2.RouteMessageResponse:
    return await harness.stub.RouteMessage(router_service_pb2.RouteMessageRequest(message=message), timeout=30)


async def test_rules_are_created_normalized_listed_checked_and_deleted(harness: Harness) -> None:
    await create_instance(harness)
    async with access_client(harness) as client:
        exact = await add_rule(client, "+55 11 99999-0001", BLOCK, "acme")
        prefix = await add_rule(client, "+5511*", ALLOW)
        assert exact.pattern == "+5511999990001"
        assert exact.scope == access_service_pb2.RULE_SCOPE_SENDER
        listed = await client.ListRules(access_service_pb2.ListRulesRequest(), metadata=key(ADMIN_KEY))
        assert {r.id for r in listed.rules} == {exact.id, prefix.id}
        only_acme = await client.ListRules(
            access_service_pb2.ListRulesRequest(instance_name="acme"), metadata=key(ADMIN_KEY)
        )
        assert [r.id for r in only_acme.rules] == [exact.id]

        check = await client.CheckAccess(
            access_service_pb2.CheckAccessRequest(instance_name="acme", sender_id="5511999990001@s.whatsapp.net"),
            metadata=key(ADMIN_KEY),
        )
        assert (check.allowed, check.rule.id) == (False, exact.id)
        assert exact.id in check.reason
        other = await client.CheckAccess(
            access_service_pb2.CheckAccessRequest(instance_name="acme", sender_id="+5511888880001"),
            metadata=key(ADMIN_KEY),
        )
        assert (other.allowed, other.rule.id) == (True, prefix.id)

        await client.DeleteRule(access_service_pb2.DeleteRuleRequest(id=exact.id), metadata=key(ADMIN_KEY))
        gone = client.DeleteRule(access_service_pb2.DeleteRuleRequest(id=exact.id), metadata=key(ADMIN_KEY))
        assert await code_of(gone) == grpc.StatusCode.NOT_FOUND
        bad = add_rule(client, "not-a-phone", BLOCK, "acme")
        assert await code_of(bad) == grpc.StatusCode.INVALID_ARGUMENT
        unknown = add_rule(client, "+5511*", BLOCK, "nobody")
        assert await code_of(unknown) == grpc.StatusCode.NOT_FOUND
        untyped = add_rule(client, "+5511*", access_service_pb2.RULE_TYPE_UNSPECIFIED, "acme")
        assert await code_of(untyped) == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_scoped_key_manages_its_own_instance_rules_only(harness: Harness) -> None:
    await create_instance(harness, "acme")
    await create_instance(harness, "beta")
    created = await harness.stub.CreateApiKey(router_service_pb2.CreateApiKeyRequest(instance_name="acme"))
    acme_key = created.key
    async with access_client(harness) as client:
        global_rule = await add_rule(client, "+1*", BLOCK)
        beta_rule = await add_rule(client, "+5521*", BLOCK, "beta")
        own = await add_rule(client, "+5511*", BLOCK, "acme", api_key=acme_key)

        listed = await client.ListRules(access_service_pb2.ListRulesRequest(), metadata=key(acme_key))
        assert [r.id for r in listed.rules] == [own.id]
        assert (
            await code_of(
                client.ListRules(access_service_pb2.ListRulesRequest(instance_name="beta"), metadata=key(acme_key))
            )
            == grpc.StatusCode.NOT_FOUND
        )
        assert await code_of(add_rule(client, "+44*", BLOCK, api_key=acme_key)) == grpc.StatusCode.PERMISSION_DENIED
        assert await code_of(add_rule(client, "+44*", BLOCK, "beta", api_key=acme_key)) == grpc.StatusCode.NOT_FOUND
        delete_beta = client.DeleteRule(access_service_pb2.DeleteRuleRequest(id=beta_rule.id), metadata=key(acme_key))
        assert await code_of(delete_beta) == grpc.StatusCode.NOT_FOUND
        delete_global = client.DeleteRule(
            access_service_pb2.DeleteRuleRequest(id=global_rule.id), metadata=key(acme_key)
        )
        assert await code_of(delete_global) == grpc.StatusCode.PERMISSION_DENIED
        check_beta = client.CheckAccess(
            access_service_pb2.CheckAccessRequest(instance_name="beta", sender_id="+5521999990001"),
            metadata=key(acme_key),
        )
        assert await code_of(check_beta) == grpc.StatusCode.NOT_FOUND
        await client.DeleteRule(access_service_pb2.DeleteRuleRequest(id=own.id), metadata=key(acme_key))


async def test_another_replica_sees_a_change_within_a_second(harness: Harness) -> None:
    await create_instance(harness)
    replica = AccessRuleCache(AccessRuleRepository(harness.db), poll_seconds=0.5)
    await replica.start()
    try:
        assert not replica.policy.rules
        async with access_client(harness) as client:
            rule = await add_rule(client, "+5511*", BLOCK, "acme")
            loop = asyncio.get_running_loop()
            started = loop.time()
            while not replica.policy.rules:
                assert loop.time() - started < 1.0, "the second replica did not see the rule within a second"
                await asyncio.sleep(0.02)
            assert [r.id for r in replica.policy.rules] == [rule.id]
            await client.DeleteRule(access_service_pb2.DeleteRuleRequest(id=rule.id), metadata=key(ADMIN_KEY))
            started = loop.time()
            while replica.policy.rules:
                assert loop.time() - started < 1.0
                await asyncio.sleep(0.02)
    finally:
        await replica.stop()


async def test_a_blocked_sender_never_reaches_the_agent_and_a_redelivery_stays_blocked(harness: Harness) -> None:
    await create_instance(harness)
    async with access_client(harness) as client:
        rule = await add_rule(client, "+5511999990001", BLOCK, "acme")
        answer = await route(harness, inbound("blocked-1"))
        assert answer.outcome == BLOCKED
        assert rule.id in answer.error_message
        assert "+5511999990001" in answer.error_message
        assert harness.agent.calls == []
        assert harness.channels.requests == []
        attributes = dict(harness.spans("router.route")[-1].attributes or {})
        assert attributes["omni.status"] == "blocked"
        assert attributes["omni.access.rule_id"] == rule.id
        assert attributes["omni.access.rule_pattern"] == "+5511999990001"

        # The outcome is stored: a redelivery after the rule is gone is not re-evaluated and calls no agent.
        await client.DeleteRule(access_service_pb2.DeleteRuleRequest(id=rule.id), metadata=key(ADMIN_KEY))
        assert (await route(harness, inbound("blocked-1"))).outcome == BLOCKED
        assert harness.agent.calls == []
        assert (await route(harness, inbound("fresh-1"))).outcome == SENT
        assert len(harness.agent.calls) == 1


async def test_blocked_text_is_the_only_answer_and_the_lid_is_matched(harness: Harness) -> None:
    await create_instance(harness, blocked_text="Sorry, this number cannot use the assistant.")
    async with access_client(harness) as client:
        await add_rule(client, "777@lid", BLOCK, "acme")
    answer = await route(harness, inbound("lid-1", alt_id="777@lid"))
    assert answer.outcome == BLOCKED
    assert harness.agent.calls == []
    assert harness.channels.delivered == ["Sorry, this number cannot use the assistant."]
    assert harness.channels.requests[0].idempotency_key == "lid-1:blocked"
    assert list(answer.sent_message_ids) == ["wamid-1"]


async def test_allowlist_mode_lets_only_allowed_senders_reach_the_agent(harness: Harness) -> None:
    await create_instance(harness, access_mode="allowlist")
    refused = await route(harness, inbound("a-1"))
    assert refused.outcome == BLOCKED
    assert "allowlist" in refused.error_message
    async with access_client(harness) as client:
        await add_rule(client, "+551199999*", ALLOW, "acme")
    assert (await route(harness, inbound("a-2"))).outcome == SENT
    stranger = inbound("a-3", sender_id="5521999990001@s.whatsapp.net", chat_id="5521999990001@s.whatsapp.net")
    assert (await route(harness, stranger)).outcome == BLOCKED
    assert len(harness.agent.calls) == 1


async def test_deleting_an_instance_deletes_its_rules_and_keeps_the_global_ones(harness: Harness) -> None:
    await create_instance(harness, "gone")
    async with access_client(harness) as client:
        await add_rule(client, "+5511*", BLOCK, "gone")
        kept = await add_rule(client, "+5521*", BLOCK)
        await harness.stub.DeleteInstance(router_service_pb2.DeleteInstanceRequest(name="gone"))
        listed = await client.ListRules(access_service_pb2.ListRulesRequest(), metadata=key(ADMIN_KEY))
        assert [r.id for r in listed.rules] == [kept.id]
