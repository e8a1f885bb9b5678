"""The users and sessions routes over the fake UsersService: JSON shapes, paging, scope and errors."""

from __future__ import annotations

import httpx

from tests.gateway.conftest import FakeMesh
from tests.gateway.fakes import fake_user

PHONE_JID = "5511999990001@s.whatsapp.net"


def seed(mesh: FakeMesh) -> None:
    for user_id, instance in (("u-1", "acme"), ("u-2", "acme"), ("u-3", "globex")):
        mesh.users.users[user_id] = fake_user(user_id, instance)


async def test_a_user_shows_ids_sessions_and_counts(client: httpx.AsyncClient, mesh: FakeMesh) -> None:
    seed(mesh)
    response = await client.get("/api/v1/users/u-1")
    assert response.status_code == 200
    body = response.json()
    assert body["message_count"] == 2
    assert body["phone_number"] == "+5511999990001"
    assert body["external_ids"] == [{"instance_name": "acme", "channel": "whatsapp", "external_id": PHONE_JID}]
    assert [s["id"] for s in body["sessions"]] == ["session-u-1"]
    assert body["first_seen_at"].endswith("Z")


async def test_the_list_pages_filters_and_leaves_details_out(client: httpx.AsyncClient, mesh: FakeMesh) -> None:
    seed(mesh)
    response = await client.get("/api/v1/users", params={"instance_name": "acme", "page": 2, "page_size": 1})
    assert response.status_code == 200
    body = response.json()
    assert body["total_count"] == 2
    assert body["page"] == 2
    assert len(body["users"]) == 1
    assert "sessions" not in body["users"][0]
    sent = mesh.script.calls["ListUsers"][-1]
    assert (sent.instance_name, sent.page_token, sent.page_size) == ("acme", "1", 1)
    bad = await client.get("/api/v1/users", params={"page_size": 0})
    assert bad.status_code == 422


async def test_unknown_users_and_sessions_are_404(client: httpx.AsyncClient, mesh: FakeMesh) -> None:
    for path in ("/api/v1/users/nobody", "/api/v1/sessions/nothing"):
        response = await client.get(path)
        assert response.status_code == 404
        assert response.json()["reason"] in ("USER_NOT_FOUND", "SESSION_NOT_FOUND")


async def test_linking_needs_another_user(client: httpx.AsyncClient, mesh: FakeMesh) -> None:
    seed(mesh)
    linked = await client.post("/api/v1/users/u-1/link", json={"user_id": "u-2"})
    assert linked.status_code == 200
    assert linked.json()["id"] == "u-1"
    assert mesh.script.calls["LinkUsers"][-1].other_user_id == "u-2"
    itself = await client.post("/api/v1/users/u-1/link", json={"user_id": "u-1"})
    assert itself.status_code == 422  # INVALID_ARGUMENT, as the gateway maps it
    for bad in ({}, {"user_id": ""}, {"user_id": "u-2", "extra": 1}):
        response = await client.post("/api/v1/users/u-1/link", json=bad)
        assert response.status_code == 422, bad


async def test_deleting_reports_what_was_erased(client: httpx.AsyncClient, mesh: FakeMesh) -> None:
    seed(mesh)
    response = await client.delete("/api/v1/users/u-1")
    assert response.status_code == 200
    assert response.json() == {
        "user_id": "u-1",
        "status": "deleted",
        "sessions_deleted": 1,
        "traces_deleted": 3,
        "inbox_messages_deleted": 1,
    }


async def test_sessions_list_read_and_reset(client: httpx.AsyncClient, mesh: FakeMesh) -> None:
    seed(mesh)
    listed = await client.get("/api/v1/sessions", params={"user_id": "u-1"})
    assert listed.status_code == 200
    assert [s["id"] for s in listed.json()["sessions"]] == ["session-u-1"]
    one = await client.get("/api/v1/sessions/session-u-1")
    assert one.json()["session_name"] == "+5511999990001"
    assert "agent_session_id" not in one.json()  # null until an agent returns one
    reset = await client.post("/api/v1/sessions/session-u-1/reset")
    assert reset.status_code == 200
    assert reset.json()["id"] == "session-u-1-reset"
    assert reset.json()["message_count"] == 0


async def test_a_scoped_key_sees_its_instances_users_only(client: httpx.AsyncClient, mesh: FakeMesh) -> None:
    seed(mesh)
    key = mesh.router.add_api_key("acme")
    headers = {"x-api-key": key}
    listed = await client.get("/api/v1/users", headers=headers)
    assert {u["id"] for u in listed.json()["users"]} == {"u-1", "u-2"}
    assert (await client.get("/api/v1/users/u-3", headers=headers)).status_code == 404
    link = await client.post("/api/v1/users/u-1/link", json={"user_id": "u-3"}, headers=headers)
    assert link.status_code == 404
    assert (await client.delete("/api/v1/users/u-3", headers=headers)).status_code == 404
    assert (await client.post("/api/v1/sessions/session-u-3/reset", headers=headers)).status_code == 404
