"""The lifecycle routes at the edge: connect/restart/logout/disconnect, discover, delete_remote, and how the channel
gateway's failures become HTTP answers (502 with the gateway's reason, never a 500, never a fake success)."""

from __future__ import annotations

import httpx
import pytest
from omni.channels.v1 import channels_service_pb2

from servicekit import errors
from tests.gateway.conftest import FakeMesh, whatsapp_instance
from tests.gateway.fakes import Script


@pytest.fixture
def script(mesh: FakeMesh) -> Script:
    return mesh.script


@pytest.fixture
async def client(client: httpx.AsyncClient) -> httpx.AsyncClient:
    """The admin client of the fake mesh, with instance "acme" created."""
    assert (await client.post("/api/v1/instances", json=whatsapp_instance("acme"))).status_code == 201
    return client


@pytest.mark.parametrize(
    ("action", "value"),
    [
        ("connect", channels_service_pb2.CONNECTION_ACTION_CONNECT),
        ("restart", channels_service_pb2.CONNECTION_ACTION_RESTART),
        ("logout", channels_service_pb2.CONNECTION_ACTION_LOGOUT),
        ("disconnect", channels_service_pb2.CONNECTION_ACTION_DISCONNECT),
    ],
)
async def test_each_action_is_one_manage_connection_call(
    client: httpx.AsyncClient, script: Script, action: str, value: int
) -> None:
    response = await client.post(f"/api/v1/instances/acme/{action}")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["instance_name"] == "acme"
    assert body["action"] == action
    assert body["status"] == "connecting"
    assert body["qr_code"] == "iVBORw0KGgo="
    assert body["message"] == "scan the QR code"
    [request] = script.calls["ManageConnection"]
    assert (request.instance_name, request.action) == ("acme", value)


async def test_connect_with_a_phone_number_asks_for_a_pairing_code(client: httpx.AsyncClient, script: Script) -> None:
    response = await client.post("/api/v1/instances/acme/connect", json={"phone_number": "+55 11 98765-0000"})
    assert response.status_code == 200
    assert script.calls["ManageConnection"][0].phone_number == "+55 11 98765-0000"


async def test_a_bad_phone_number_is_422(client: httpx.AsyncClient, script: Script) -> None:
    response = await client.post("/api/v1/instances/acme/connect", json={"phone_number": "call me"})
    assert response.status_code == 422
    assert not script.calls["ManageConnection"]


async def test_evolution_refusing_an_action_is_502_with_its_words(client: httpx.AsyncClient, script: Script) -> None:
    script.fail(
        "ManageConnection",
        errors.FailedPreconditionError(
            "whatsapp refused to connect: Connection Closed", reason="CHANNEL_REJECTED", metadata={"upstream": "wa"}
        ),
    )
    response = await client.post("/api/v1/instances/acme/connect")
    assert response.status_code == 502
    assert response.json() == {"detail": "whatsapp refused to connect: Connection Closed", "reason": "CHANNEL_REJECTED"}


async def test_logout_of_a_closed_account_is_409(client: httpx.AsyncClient, script: Script) -> None:
    script.fail(
        "ManageConnection",
        errors.FailedPreconditionError('The "acme-wa" instance is not connected', reason="NOT_CONNECTED"),
    )
    response = await client.post("/api/v1/instances/acme/logout")
    assert response.status_code == 409
    assert response.json()["reason"] == "NOT_CONNECTED"


async def test_discover_is_not_read_as_an_instance_name(client: httpx.AsyncClient, script: Script) -> None:
    response = await client.get("/api/v1/instances/discover")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "instances": [
            {
                "name": "spare",
                "evolution_url": "http://evo.test",
                "status": "connected",
                "raw_state": "open",
                "owner_jid": "5511987650000@s.whatsapp.net",
                "profile_name": None,
                "remote_id": None,
            }
        ]
    }
    assert not script.calls["GetInstance"]


async def test_discover_passes_the_server_and_validates_it(client: httpx.AsyncClient, script: Script) -> None:
    params = {"evolution_url": "http://evo.test:8080", "evolution_key": "k"}
    assert (await client.get("/api/v1/instances/discover", params=params)).status_code == 200
    request = script.calls["DiscoverInstances"][0]
    assert (request.evolution_url, request.evolution_key) == ("http://evo.test:8080", "k")
    assert (await client.get("/api/v1/instances/discover", params={"evolution_url": "ftp://x"})).status_code == 422
    assert (await client.get("/api/v1/instances/discover", params={"evolution_key": "k"})).status_code == 422


async def test_discover_with_a_refused_key_is_502(client: httpx.AsyncClient, script: Script) -> None:
    script.fail(
        "DiscoverInstances",
        errors.InvalidArgumentError(
            "whatsapp refused to list its instances: Unauthorized",
            reason="ACCOUNT_REJECTED",
            metadata={"upstream": "whatsapp"},
        ),
    )
    response = await client.get("/api/v1/instances/discover", params={"evolution_url": "http://e.test"})
    assert response.status_code == 502
    assert "Unauthorized" in response.json()["detail"]


async def test_delete_remote_is_passed_to_the_router(client: httpx.AsyncClient, script: Script) -> None:
    assert (await client.delete("/api/v1/instances/acme?delete_remote=true")).status_code == 204
    assert script.calls["DeleteInstance"][-1].delete_remote is True


async def test_delete_keeps_the_remote_instance_by_default(client: httpx.AsyncClient, script: Script) -> None:
    assert (await client.delete("/api/v1/instances/acme")).status_code == 204
    assert script.calls["DeleteInstance"][-1].delete_remote is False


async def test_a_provisioning_refusal_is_502_and_a_discord_refusal_stays_422(
    client: httpx.AsyncClient, script: Script
) -> None:
    script.fail(
        "CreateInstance",
        errors.InvalidArgumentError(
            "whatsapp refused to provision the instance: Unauthorized",
            reason="ACCOUNT_REJECTED",
            metadata={"upstream": "whatsapp"},
        ),
    )
    response = await client.post("/api/v1/instances", json=whatsapp_instance("beta"))
    assert response.status_code == 502
    assert response.json()["detail"] == "whatsapp refused to provision the instance: Unauthorized"
    script.fail("CreateInstance", errors.InvalidArgumentError("Discord refused the token", reason="ACCOUNT_REJECTED"))
    assert (await client.post("/api/v1/instances", json=whatsapp_instance("gamma"))).status_code == 422
