"""WhatsApp provisioning and connection lifecycle through the real mesh (launcher + processes), the Evolution
simulator and the public REST API: create provisions Evolution, connect shows a QR, the phone's scan reaches /status
through the real webhook route (no Evolution round trip), logout/disconnect/restart, discover, delete."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from launcher.local_mesh import free_port
from tests.e2e.conftest import AGENT_KEY, World
from tests.helpers.mesh import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]


def fields(world: World, name: str, **overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "name": name,
        "channel_type": "whatsapp",
        "evolution_url": world.evolution.url,
        "evolution_key": world.evolution.api_key,
        "whatsapp_instance": f"{name}-wa",
        "agent_api_url": world.agent.url,
        "agent_api_key": AGENT_KEY,
        "default_agent": "echo",
    }
    values.update(overrides)
    return values


async def post(world: World, path: str, **kwargs: Any) -> tuple[int, Any]:
    async with world.mesh.client.post(path, **kwargs) as response:
        return response.status, await response.json()


async def provisioned(world: World) -> tuple[str, str, dict[str, Any]]:
    """A fresh instance whose Evolution instance Omni created: (hub name, Evolution name, create response)."""
    name = f"prov-{uuid.uuid4().hex[:8]}"
    created = await world.mesh.create_instance(**fields(world, name))
    return name, f"{name}-wa", created


async def test_create_provisions_evolution_with_the_webhook_secret_and_keeps_the_token_masked(world: World) -> None:
    name, remote, created = await provisioned(world)

    instance = world.evolution.state.instances[remote]
    hook = world.evolution.webhook_of(remote)
    assert hook is not None
    assert hook["url"] == f"{world.mesh.base_url}/api/v1/webhook/evolution/{name}"
    assert hook["headers"] == {"x-omni-webhook-secret": created["webhook_secret"]}
    assert "QRCODE_UPDATED" in hook["events"]
    assert "CONNECTION_UPDATE" in hook["events"]
    code, body = await world.mesh.get_json(f"/api/v1/instances/{name}")
    assert code == 200
    assert body["has_evolution_instance_token"] is True
    assert body["evolution_instance_token"] == "****" + instance.token[-4:]
    assert instance.token not in str(body)


async def test_connect_scan_and_status_come_from_the_webhooks(world: World) -> None:
    name, remote, _ = await provisioned(world)

    code, connected = await post(world, f"/api/v1/instances/{name}/connect")
    assert code == 200, connected
    assert connected["status"] == "connecting"
    assert connected["qr_code"]

    # The qrcode.updated Evolution posted (through the gateway, ingress and channels) is what /qr-code shows.
    async def qr_recorded() -> dict[str, Any] | None:
        world.evolution.reset()
        status, qr = await world.mesh.get_json(f"/api/v1/instances/{name}/qr-code")
        no_round_trip = not any(remote in path for _, path in world.evolution.requests)
        return qr if status == 200 and qr["qr_code"] and no_round_trip else None

    qr = await eventually(qr_recorded, timeout=10)
    assert qr["status"] == "connecting"

    world.evolution.scan_qr(remote, owner_jid="5511987650000@s.whatsapp.net", profile_name="Acme Suporte")

    async def open_recorded() -> dict[str, Any] | None:
        _, status = await world.mesh.get_json(f"/api/v1/instances/{name}/status")
        return status if status["status"] == "connected" else None

    status = await eventually(open_recorded, timeout=10)
    assert status["account_id"] == "5511987650000@s.whatsapp.net"
    assert status["account_name"] == "Acme Suporte"
    world.evolution.reset()
    code, again = await world.mesh.get_json(f"/api/v1/instances/{name}/status")
    assert (code, again["status"]) == (200, "connected")
    assert world.evolution.requests == []  # answered from what the webhook said
    async with world.mesh.client.get("/health") as response:
        health = await response.json()
    assert health["connections"]["connected"] >= 1  # counted from the recorded states, no instance named
    assert name not in str(health["connections"])
    assert world.evolution.requests == []

    code, out = await post(world, f"/api/v1/instances/{name}/logout")
    assert (code, out["status"]) == (200, "disconnected"), out
    code, refused = await post(world, f"/api/v1/instances/{name}/logout")
    assert code == 409, refused
    assert "not connected" in refused["detail"]
    code, idempotent = await post(world, f"/api/v1/instances/{name}/disconnect")
    assert (code, idempotent["status"]) == (200, "disconnected")
    assert remote in world.evolution.state.instances  # logout and disconnect keep the Evolution instance


async def test_a_pairing_code_and_a_restart(world: World) -> None:
    name, _, _ = await provisioned(world)
    code, paired = await post(world, f"/api/v1/instances/{name}/connect", json={"phone_number": "+5511987650000"})
    assert code == 200, paired
    assert len(paired["pairing_code"]) == 8
    code, restarted = await post(world, f"/api/v1/instances/{name}/restart")
    assert (code, restarted["status"]) == (200, "connecting"), restarted


async def test_evolution_answering_200_error_true_is_a_502_with_its_reason(world: World) -> None:
    name, remote, _ = await provisioned(world)
    world.evolution.fail_connection_actions(remote, "Connection Closed")
    try:
        for action in ("connect", "restart"):
            code, body = await post(world, f"/api/v1/instances/{name}/{action}")
            assert code == 502, body
            assert "Connection Closed" in body["detail"]
    finally:
        world.evolution.fail_connection_actions(remote, "")


async def test_evolution_refusing_the_key_is_a_502_and_nothing_is_stored(world: World) -> None:
    name = f"bad-{uuid.uuid4().hex[:8]}"
    code, body = await post(world, "/api/v1/instances", json=fields(world, name, evolution_key="not-the-key"))
    assert code == 502, body
    assert "Unauthorized" in body["detail"]
    assert (await world.mesh.get_json(f"/api/v1/instances/{name}"))[0] == 404
    assert f"{name}-wa" not in world.evolution.state.instances


async def test_evolution_down_is_a_502_and_nothing_is_stored(world: World) -> None:
    name = f"down-{uuid.uuid4().hex[:8]}"
    dead = f"http://127.0.0.1:{free_port()}"
    code, body = await post(world, "/api/v1/instances", json=fields(world, name, evolution_url=dead))
    assert code == 502, body
    assert (await world.mesh.get_json(f"/api/v1/instances/{name}"))[0] == 404


async def test_an_existing_evolution_instance_is_adopted_and_updates_resync_it(world: World) -> None:
    name = await world.new_instance()  # the Evolution instance exists first, with its own token as the key
    assert ("POST", f"/settings/set/{name}") in world.evolution.requests
    async with world.mesh.client.put(f"/api/v1/instances/{name}", json={"group_reply": "never"}) as response:
        assert response.status == 200, await response.text()
    settings = world.evolution.settings_of(name)
    assert settings is not None
    assert settings["groupsIgnore"] is True


async def test_discover_lists_what_omni_does_not_manage(world: World) -> None:
    _, remote, _ = await provisioned(world)
    spare = f"spare-{uuid.uuid4().hex[:8]}"
    world.evolution.add_instance(spare, state="close")
    params = {"evolution_url": world.evolution.url, "evolution_key": world.evolution.api_key}

    # Channels learns of the new instance through the router's watch stream: "managed" is eventually consistent.
    async def discovered() -> set[str] | None:
        code, body = await world.mesh.get_json("/api/v1/instances/discover", **params)
        assert code == 200, body
        names = {item["name"] for item in body["instances"]}
        return names if remote not in names else None

    names = await eventually(discovered, timeout=10)
    assert spare in names
    code, everywhere = await world.mesh.get_json("/api/v1/instances/discover")
    assert code == 200
    assert spare in {item["name"] for item in everywhere["instances"]}


async def test_delete_keeps_evolution_unless_delete_remote(world: World) -> None:
    kept, kept_remote, _ = await provisioned(world)
    gone, gone_remote, _ = await provisioned(world)

    async with world.mesh.client.delete(f"/api/v1/instances/{kept}") as response:
        assert response.status == 204
    async with world.mesh.client.delete(f"/api/v1/instances/{gone}", params={"delete_remote": "true"}) as response:
        assert response.status == 204

    assert kept_remote in world.evolution.state.instances
    assert gone_remote not in world.evolution.state.instances
    assert (await world.mesh.get_json(f"/api/v1/instances/{gone}"))[0] == 404
