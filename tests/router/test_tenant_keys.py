"""Per-tenant keys in the router: an API send's Idempotency-Key is scoped by the instance id, and user and session
ids derive from it, so neither another tenant nor a recreated instance of the same name shares them."""

from __future__ import annotations

from omni.router.v1 import router_service_pb2

from tests.router.conftest import Harness, inbound, whatsapp_instance


async def create(h: Harness, name: str) -> str:
    response = await h.stub.CreateInstance(
        router_service_pb2.CreateInstanceRequest(instance=whatsapp_instance(h.agent.url, name=name))
    )
    instance_id: str = response.instance.id
    assert instance_id
    return instance_id


async def send(h: Harness, instance: str, text: str = "Your order shipped.") -> router_service_pb2.SendTextResponse:
    return await h.stub.SendText(
        router_service_pb2.SendTextRequest(
            instance_name=instance, recipient="+5511999999999", text=text, idempotency_key="order-42"
        )
    )


async def test_the_same_key_on_two_instances_sends_twice(harness: Harness) -> None:
    acme, beta = await create(harness, "acme"), await create(harness, "beta")
    first, second = await send(harness, "acme"), await send(harness, "beta")
    assert first.message_ids != second.message_ids
    assert harness.channels.delivered == ["Your order shipped.", "Your order shipped."]
    keys = [r.idempotency_key for r in harness.channels.requests]
    assert keys == [f"api:{acme}:order-42", f"api:{beta}:order-42"]


async def test_the_same_key_and_message_on_one_instance_sends_once(harness: Harness) -> None:
    await create(harness, "acme")
    first, again = await send(harness, "acme"), await send(harness, "acme")
    assert first.message_ids == again.message_ids
    assert harness.channels.delivered == ["Your order shipped."]


async def test_a_recreated_instance_starts_with_fresh_keys_users_and_sessions(harness: Harness) -> None:
    old = await create(harness, "acme")
    await send(harness, "acme")
    routed = await harness.stub.RouteMessage(router_service_pb2.RouteMessageRequest(message=inbound("m-1")))

    await harness.stub.DeleteInstance(router_service_pb2.DeleteInstanceRequest(name="acme"))
    assert harness.purger.purged == ["acme", "acme"]  # before the row goes, and once more after
    new = await create(harness, "acme")
    assert new != old

    await send(harness, "acme")  # the same key: a new message of the new instance, sent
    assert harness.channels.delivered.count("Your order shipped.") == 2
    again = await harness.stub.RouteMessage(router_service_pb2.RouteMessageRequest(message=inbound("m-2")))
    assert again.outcome == routed.outcome
    assert again.user_id != routed.user_id
    assert again.session_id != routed.session_id
