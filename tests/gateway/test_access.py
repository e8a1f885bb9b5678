"""/api/v1/access: bodies to AccessService requests, validation (422 with a reason), scopes, and router errors."""

from __future__ import annotations

import httpx
from omni.router.v1 import access_service_pb2

from servicekit.errors import InvalidArgumentError
from tests.gateway.conftest import FakeMesh, whatsapp_instance


async def test_a_phone_rule_is_normalized_and_created(client: httpx.AsyncClient, mesh: FakeMesh) -> None:
    response = await client.post(
        "/api/v1/access/rules",
        json={"phone_number": "+55 (11) 99999-9999", "rule_type": "block", "instance_name": "acme"},
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["pattern"] == body["phone_number"] == "+5511999999999"
    assert (body["scope"], body["rule_type"], body["instance_name"], body["chat_id"]) == (
        "sender",
        "block",
        "acme",
        None,
    )
    [sent] = mesh.script.calls["CreateRule"]
    assert sent.rule.pattern == "+5511999999999"
    assert sent.rule.rule_type == access_service_pb2.RULE_TYPE_BLOCK


async def test_a_global_prefix_a_sender_id_and_a_chat_rule(client: httpx.AsyncClient, mesh: FakeMesh) -> None:
    prefix = await client.post("/api/v1/access/rules", json={"phone_number": "+5511*", "rule_type": "allow"})
    assert prefix.status_code == 201
    assert prefix.json()["instance_name"] is None
    discord = await client.post(
        "/api/v1/access/rules", json={"sender_id": "123456789012345678", "rule_type": "block", "instance_name": "acme"}
    )
    assert discord.json()["sender_id"] == "123456789012345678"
    assert discord.json()["phone_number"] is None
    group = await client.post(
        "/api/v1/access/rules",
        json={"chat_id": "120363000000000001@g.us", "rule_type": "block", "instance_name": "acme"},
    )
    assert (group.json()["scope"], group.json()["chat_id"]) == ("chat", "120363000000000001@g.us")
    assert mesh.script.calls["CreateRule"][-1].rule.scope == access_service_pb2.RULE_SCOPE_CHAT

    listed = await client.get("/api/v1/access/rules", params={"instance_name": "acme"})
    assert listed.status_code == 200
    assert {rule["id"] for rule in listed.json()["rules"]} == {discord.json()["id"], group.json()["id"]}
    assert mesh.script.calls["ListRules"][-1].instance_name == "acme"


async def test_bad_bodies_are_422_with_a_reason(client: httpx.AsyncClient, mesh: FakeMesh) -> None:
    for body in (
        {"phone_number": "call me", "rule_type": "block"},
        {"phone_number": "+5511*", "rule_type": "maybe"},
        {"rule_type": "block"},
        {"phone_number": "+5511*", "sender_id": "U0123", "rule_type": "block"},
        {"phone_number": "+5511*", "rule_type": "block", "extra": 1},
    ):
        response = await client.post("/api/v1/access/rules", json=body)
        assert response.status_code == 422, body
        assert response.json()["reason"] == "INVALID_ARGUMENT"
    assert "CreateRule" not in mesh.script.calls
    # The router refuses an id the instance's channel does not use: still a 422 with its reason.
    mesh.script.fail("CreateRule", InvalidArgumentError("pattern 'abc': is not a Discord user id"))
    refused = await client.post(
        "/api/v1/access/rules", json={"sender_id": "abc", "rule_type": "block", "instance_name": "acme"}
    )
    assert refused.status_code == 422
    assert "Discord" in refused.json()["detail"]


async def test_check_says_which_rule_applies(client: httpx.AsyncClient, mesh: FakeMesh) -> None:
    rule = mesh.access.add_rule("acme", "+5511999999999")
    blocked = await client.post(
        "/api/v1/access/check", json={"instance_name": "acme", "phone_number": "+5511999999999"}
    )
    assert blocked.status_code == 200
    assert blocked.json()["allowed"] is False
    assert blocked.json()["rule"]["id"] == rule.id
    allowed = await client.post(
        "/api/v1/access/check", json={"instance_name": "acme", "sender_id": "777@lid", "chat_id": "1@g.us"}
    )
    assert allowed.json() == {"allowed": True, "rule": None, "reason": "no rule matches (access_mode open)"}
    assert mesh.script.calls["CheckAccess"][-1].chat_id == "1@g.us"
    missing = await client.post("/api/v1/access/check", json={"instance_name": "acme"})
    assert missing.status_code == 422


async def test_a_scoped_key_cannot_touch_global_rules(
    client: httpx.AsyncClient, anon: httpx.AsyncClient, mesh: FakeMesh
) -> None:
    assert (await client.post("/api/v1/instances", json=whatsapp_instance("acme"))).status_code == 201
    scoped = {"x-api-key": mesh.router.add_api_key("acme")}
    global_rule = mesh.access.add_rule("", "+1*", "rule-global")
    create = await anon.post(
        "/api/v1/access/rules", json={"phone_number": "+5511*", "rule_type": "block"}, headers=scoped
    )
    assert (create.status_code, create.json()["reason"]) == (403, "ADMIN_ONLY")
    delete = await anon.delete(f"/api/v1/access/rules/{global_rule.id}", headers=scoped)
    assert (delete.status_code, delete.json()["reason"]) == (403, "ADMIN_ONLY")
    assert mesh.script.calls["DeleteRule"][-1].instance_name == "acme"
    listed = await anon.get("/api/v1/access/rules", headers=scoped)
    assert listed.status_code == 200
    assert mesh.script.calls["ListRules"][-1].instance_name == "acme"
    assert (await client.delete(f"/api/v1/access/rules/{global_rule.id}")).status_code == 204
    assert mesh.script.calls["DeleteRule"][-1].instance_name == ""
