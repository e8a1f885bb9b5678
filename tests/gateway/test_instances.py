"""Instance CRUD through the gateway: validation, masking, status codes and what reaches the router."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from omni.channels.v1 import channels_service_pb2
from omni.common.v1 import channel_pb2, message_pb2

from tests.gateway.conftest import FakeMesh, whatsapp_instance
from tests.gateway.fakes import GRPC_TIMEOUT_ROUNDING

SECRETS = {
    "evolution_key": "evo-secret-1FAB",
    "agent_api_key": "agent-secret-9XYZ",
    "webhook_secret": "hook-HOOK",
}
"""The secrets of a WhatsApp instance."""

SLACK_SECRETS = {
    "slack_bot_token": "xoxb-slack-SL4K",
    "slack_signing_secret": "signing-S1GN",
    "slack_app_token": "xapp-app-APP1",
}


@dataclass(frozen=True)
class Invalid:
    """One create body that must be refused with 422, and the field the error names."""

    id: str
    overrides: dict[str, Any]
    field: str


INVALID_CREATES = [
    Invalid("upper-case name", {"name": "Acme"}, "name"),
    Invalid("name with space", {"name": "ac me"}, "name"),
    Invalid("name starts with dash", {"name": "-acme"}, "name"),
    Invalid("name too long", {"name": "a" * 64}, "name"),
    Invalid("empty name", {"name": ""}, "name"),
    Invalid("name with slash", {"name": "a/b"}, "name"),
    Invalid("name not a string", {"name": 12}, "name"),
    *[
        Invalid(f"reserved {word}", {"name": word}, "name")
        for word in ("instances", "traces", "webhook", "health", "access", "api", "docs", "dead-letters", "send-text")
    ],
    Invalid("unknown channel", {"channel_type": "telegram"}, "channel_type"),
    Invalid("ftp evolution url", {"evolution_url": "ftp://evolution.local"}, "evolution_url"),
    Invalid("evolution url without host", {"evolution_url": "http://"}, "evolution_url"),
    Invalid("agent url not a url", {"agent_api_url": "agent.local"}, "agent_api_url"),
    Invalid("agent url javascript", {"agent_api_url": "javascript:alert(1)"}, "agent_api_url"),
    Invalid("agent url missing", {"agent_api_url": None}, "agent_api_url"),
    Invalid("whatsapp without evolution url", {"evolution_url": None}, ""),
    Invalid("whatsapp without whatsapp_instance", {"whatsapp_instance": ""}, ""),
    Invalid("timeout zero", {"agent_timeout": 0}, "agent_timeout"),
    Invalid("timeout too long", {"agent_timeout": 601}, "agent_timeout"),
    Invalid("timeout beyond int32", {"agent_timeout": 2**40}, "agent_timeout"),
    Invalid("timeout fractional", {"agent_timeout": 1.5}, "agent_timeout"),
    Invalid("auto split not bool", {"enable_auto_split": "sometimes"}, "enable_auto_split"),
    Invalid("secret too long", {"evolution_key": "k" * 5000}, "evolution_key"),
    Invalid("lone surrogate", {"default_agent": "\ud800"}, "default_agent"),
]


def _drop_nones(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if v is not None}


@pytest.mark.parametrize("case", INVALID_CREATES, ids=lambda c: c.id)
async def test_invalid_creates_are_422_and_never_reach_the_router(
    client: httpx.AsyncClient, mesh: FakeMesh, case: Invalid
) -> None:
    body = _drop_nones(whatsapp_instance(**case.overrides))
    # json.dumps escapes a lone surrogate as \\ud800, exactly as a hostile client would send it.
    content = json.dumps(body).encode()
    response = await client.post("/api/v1/instances", content=content, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    payload = response.json()
    assert payload["reason"] == "INVALID_ARGUMENT"
    fields = {tuple(error["loc"][1:2]) for error in payload["detail"]}
    if case.field:
        assert (case.field,) in fields
    assert "evo-secret" not in response.text
    assert mesh.script.calls["CreateInstance"] == []


async def test_create_returns_201_with_every_secret_masked(client: httpx.AsyncClient, mesh: FakeMesh) -> None:
    body = whatsapp_instance(agent_timeout=30, fallback_text="Sorry!", **SECRETS)
    response = await client.post("/api/v1/instances", json=body)
    assert response.status_code == 201, response.text
    instance = response.json()
    # Shown once, in the create response only: the secrets the operator configures elsewhere.
    assert instance["webhook_secret"] == SECRETS["webhook_secret"]
    assert instance["agent_signing_secret"].startswith("whsec_")
    assert instance["has_agent_signing_secret"] is True
    again = (await client.get("/api/v1/instances/acme")).json()
    assert again["webhook_secret"] == "****" + SECRETS["webhook_secret"][-4:]
    assert again["agent_signing_secret"] == "****" + instance["agent_signing_secret"][-4:]
    assert instance["agent_signing_secret"] not in str(again)
    for field, secret in SECRETS.items():
        if field == "webhook_secret":
            continue
        assert instance[field] == "****" + secret[-4:]
        assert instance[f"has_{field}"] is True
        assert secret not in response.text
    assert instance["name"] == "acme"
    assert instance["channel_type"] == "whatsapp"
    assert instance["agent_timeout"] == 30
    assert instance["enable_auto_split"] is True
    assert instance["is_active"] is True
    assert instance["fallback_text"] == "Sorry!"
    assert instance["webhook_url"] == "http://hub.test/api/v1/webhook/evolution/acme"
    assert instance["created_at"].endswith("Z")
    assert instance["discord_client_id"] is None

    sent = mesh.script.calls["CreateInstance"][0].instance
    assert sent.channel == channel_pb2.CHANNEL_WHATSAPP
    assert sent.agent_timeout_seconds == 30
    assert sent.whatsapp.evolution_key.value == SECRETS["evolution_key"]
    assert sent.whatsapp.evolution_key.is_set


async def test_each_channel_s_fields_travel_in_its_config_and_come_back_masked(
    client: httpx.AsyncClient, mesh: FakeMesh
) -> None:
    body = {"name": "slacky", "channel_type": "slack", "agent_api_url": "https://agent.example.com", **SLACK_SECRETS}
    response = await client.post("/api/v1/instances", json=body)
    assert response.status_code == 201, response.text
    instance = response.json()
    for field, secret in SLACK_SECRETS.items():
        assert instance[field] == "****" + secret[-4:]
        assert instance[f"has_{field}"] is True
        assert secret not in response.text
    assert instance["webhook_url"] == "http://hub.test/api/v1/webhook/slack/slacky"
    assert instance["has_evolution_key"] is False
    sent = mesh.script.calls["CreateInstance"][0].instance
    assert sent.WhichOneof("channel_config") == "slack"
    assert sent.slack.app_token.value == SLACK_SECRETS["slack_app_token"]

    disco = {"name": "disco", "channel_type": "discord", "agent_api_url": "https://a.example", "discord_bot_token": "t"}
    created = (await client.post("/api/v1/instances", json={**disco, "discord_guild_id": "4242"})).json()
    assert (created["discord_guild_id"], created["webhook_url"]) == ("4242", None)
    updated = await client.put("/api/v1/instances/disco", json={"discord_guild_id": "5151", "default_agent": "x"})
    assert updated.json()["discord_guild_id"] == "5151"
    update = mesh.script.calls["UpdateInstance"][0]
    assert list(update.update_mask.paths) == ["default_agent", "discord.guild_id"]


async def test_another_channel_s_fields_are_refused(client: httpx.AsyncClient, mesh: FakeMesh) -> None:
    response = await client.post("/api/v1/instances", json=whatsapp_instance(discord_bot_token="tok-1234"))
    assert response.status_code == 422
    assert "discord_bot_token cannot be set on a whatsapp instance" in response.text
    missing = await client.post(
        "/api/v1/instances", json={"name": "d", "channel_type": "discord", "agent_api_url": "https://a.example"}
    )
    assert missing.status_code == 422
    assert "a discord instance needs discord_bot_token" in missing.text
    assert mesh.script.calls["CreateInstance"] == []


async def test_unset_secrets_are_null_with_has_false(client: httpx.AsyncClient) -> None:
    body = whatsapp_instance(evolution_key=None, agent_api_key=None)
    instance = (await client.post("/api/v1/instances", json=_drop_nones(body))).json()
    assert instance["evolution_key"] is None
    assert instance["has_evolution_key"] is False
    assert instance["agent_api_key"] is None
    assert instance["has_agent_api_key"] is False
    assert instance["agent_timeout"] == 60


async def test_discord_instance_needs_no_evolution_fields(client: httpx.AsyncClient) -> None:
    body = {
        "name": "disco_1",
        "channel_type": "discord",
        "discord_bot_token": "tok-ABCD",
        "agent_api_url": "https://agent.example.com",
        "evolution_url": "",
    }
    response = await client.post("/api/v1/instances", json=body)
    assert response.status_code == 201, response.text
    assert response.json()["channel_type"] == "discord"
    assert response.json()["evolution_url"] is None


async def test_duplicate_name_is_409(client: httpx.AsyncClient) -> None:
    assert (await client.post("/api/v1/instances", json=whatsapp_instance())).status_code == 201
    response = await client.post("/api/v1/instances", json=whatsapp_instance())
    assert response.status_code == 409
    assert response.json()["reason"] == "ALREADY_EXISTS"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/api/v1/instances/ghost", None),
        ("PUT", "/api/v1/instances/ghost", {"is_active": False}),
        ("DELETE", "/api/v1/instances/ghost", None),
        ("GET", "/api/v1/instances/ghost/status", None),
        ("GET", "/api/v1/instances/ghost/qr-code", None),
    ],
)
async def test_unknown_instance_is_404(
    client: httpx.AsyncClient, mesh: FakeMesh, method: str, path: str, body: Any
) -> None:
    response = await client.request(method, path, json=body)
    assert response.status_code == 404
    assert response.json() == {"detail": "instance ghost not found", "reason": "NOT_FOUND"}
    assert mesh.script.calls["GetConnectionStatus"] == []


async def test_list_pages_and_get_one(client: httpx.AsyncClient, mesh: FakeMesh) -> None:
    for name in ("c", "a", "b"):
        await client.post("/api/v1/instances", json=whatsapp_instance(name))
    page = (await client.get("/api/v1/instances", params={"page": 2, "page_size": 2})).json()
    assert [i["name"] for i in page["instances"]] == ["c"]
    assert (page["page"], page["page_size"], page["total_count"]) == (2, 2, 3)
    assert mesh.script.calls["ListInstances"][-1].page == 2
    one = (await client.get("/api/v1/instances/b")).json()
    assert one["name"] == "b"
    assert one["evolution_key"] == "****1FAB"


@pytest.mark.parametrize(
    "params", [{"page": 0}, {"page_size": 0}, {"page_size": 501}, {"page": "x"}, {"page": 2**40}, {"channel_type": "x"}]
)
async def test_bad_paging_is_422(client: httpx.AsyncClient, params: dict[str, Any]) -> None:
    response = await client.get("/api/v1/instances", params=params)
    assert response.status_code == 422
    assert response.json()["reason"] == "INVALID_ARGUMENT"


async def test_put_changes_only_the_fields_sent(client: httpx.AsyncClient, mesh: FakeMesh) -> None:
    await client.post("/api/v1/instances", json=whatsapp_instance())
    response = await client.put(
        "/api/v1/instances/acme",
        json={"agent_timeout": 90, "is_active": False, "evolution_key": "new-key-NEWK", "default_agent": None},
    )
    assert response.status_code == 200, response.text
    request = mesh.script.calls["UpdateInstance"][0]
    assert sorted(request.update_mask.paths) == [
        "agent_timeout_seconds",
        "default_agent",
        "is_active",
        "whatsapp.evolution_key",
    ]
    instance = response.json()
    assert instance["agent_timeout"] == 90
    assert instance["is_active"] is False
    assert instance["evolution_key"] == "****NEWK"
    assert instance["default_agent"] is None
    assert instance["agent_api_key"] == "****9XYZ"
    assert instance["whatsapp_instance"] == "acme-support"


async def test_put_can_clear_a_secret(client: httpx.AsyncClient) -> None:
    await client.post("/api/v1/instances", json=whatsapp_instance())
    instance = (await client.put("/api/v1/instances/acme", json={"agent_api_key": None})).json()
    assert instance["agent_api_key"] is None
    assert instance["has_agent_api_key"] is False


async def test_empty_put_returns_the_instance_unchanged(client: httpx.AsyncClient, mesh: FakeMesh) -> None:
    await client.post("/api/v1/instances", json=whatsapp_instance())
    response = await client.put("/api/v1/instances/acme", json={})
    assert response.status_code == 200
    assert response.json()["name"] == "acme"
    assert mesh.script.calls["UpdateInstance"] == []


@pytest.mark.parametrize(
    "body",
    [
        {"name": "other"},
        {"name": "Bad Name"},
        {"agent_timeout": None},
        {"is_active": None},
        {"channel_type": None},
        {"agent_api_url": "not a url"},
        {"agent_timeout": 1000},
        {"evolution_url": "file:///etc/passwd"},
    ],
)
async def test_invalid_updates_are_422(client: httpx.AsyncClient, mesh: FakeMesh, body: dict[str, Any]) -> None:
    await client.post("/api/v1/instances", json=whatsapp_instance())
    response = await client.put("/api/v1/instances/acme", json=body)
    assert response.status_code == 422, response.text
    assert mesh.script.calls["UpdateInstance"] == []


async def test_delete_is_204_then_404(client: httpx.AsyncClient) -> None:
    await client.post("/api/v1/instances", json=whatsapp_instance())
    response = await client.delete("/api/v1/instances/acme")
    assert response.status_code == 204
    assert response.content == b""
    assert (await client.get("/api/v1/instances/acme")).status_code == 404


async def test_qr_code_and_status(client: httpx.AsyncClient, mesh: FakeMesh) -> None:
    await client.post("/api/v1/instances", json=whatsapp_instance())
    qr = await client.get("/api/v1/instances/acme/qr-code")
    assert qr.status_code == 200
    assert qr.json() == {
        "instance_name": "acme",
        "channel_type": "whatsapp",
        "status": "connecting",
        "raw_state": "connecting",
        "detail": None,
        "error_message": None,
        "account_id": None,
        "account_name": None,
        "guilds": None,
        "latency_ms": None,
        "qr_code": "iVBORw0KGgo=",
        "pairing_code": None,
    }
    assert mesh.script.calls["GetConnectionStatus"][-1].include_qr_code is True

    mesh.script.respond(
        "GetConnectionStatus",
        channels_service_pb2.GetConnectionStatusResponse(
            state=channel_pb2.CONNECTION_STATE_CONNECTED, raw_state="open"
        ),
    )
    status = (await client.get("/api/v1/instances/acme/status")).json()
    assert status["status"] == "connected"
    assert status["raw_state"] == "open"
    assert mesh.script.calls["GetConnectionStatus"][-1].include_qr_code is False


async def test_a_discord_bot_s_status_names_its_guilds_latency_and_error(
    client: httpx.AsyncClient, mesh: FakeMesh
) -> None:
    body = {"name": "disco", "channel_type": "discord", "agent_api_url": "https://a.example", "discord_bot_token": "t"}
    await client.post("/api/v1/instances", json=body)
    mesh.script.respond(
        "GetConnectionStatus",
        channels_service_pb2.GetConnectionStatusResponse(
            state=channel_pb2.CONNECTION_STATE_CONNECTED,
            raw_state="connected",
            workspaces=[message_pb2.Workspace(id="42", name="Acme HQ")],
            latency_ms=41.5,
            account_id="7001",
            account_name="omni-bot",
        ),
    )
    status = (await client.get("/api/v1/instances/disco/status")).json()
    assert (status["status"], status["account_name"], status["latency_ms"]) == ("connected", "omni-bot", 41.5)
    assert status["guilds"] == [{"id": "42", "name": "Acme HQ"}]

    mesh.script.respond(
        "GetConnectionStatus",
        channels_service_pb2.GetConnectionStatusResponse(
            state=channel_pb2.CONNECTION_STATE_ERROR, detail="Discord refused the bot token (gateway close 4004)"
        ),
    )
    failed = (await client.get("/api/v1/instances/disco/status")).json()
    assert (failed["status"], failed["error_message"]) == (
        "error",
        "Discord refused the bot token (gateway close 4004)",
    )


async def test_channels_lists_what_the_bot_sees(client: httpx.AsyncClient, mesh: FakeMesh) -> None:
    body = {"name": "disco", "channel_type": "discord", "agent_api_url": "https://a.example", "discord_bot_token": "t"}
    await client.post("/api/v1/instances", json=body)
    mesh.script.respond(
        "ListChannels",
        channels_service_pb2.ListChannelsResponse(
            channels=[
                channels_service_pb2.ChatChannel(
                    id="100", name="general", kind="text", workspace=message_pb2.Workspace(id="42", name="Acme HQ")
                )
            ]
        ),
    )
    response = await client.get("/api/v1/disco/channels")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "channels": [
            {
                "instance_name": "disco",
                "channel_type": "discord",
                "status": "connecting",
                "id": "100",
                "name": "general",
                "kind": "text",
                "guild_id": "42",
                "guild_name": "Acme HQ",
                "parent_id": None,
            }
        ]
    }
    assert (await client.get("/api/v1/nobody/channels")).status_code == 404


async def test_reads_carry_a_deadline(client: httpx.AsyncClient, mesh: FakeMesh) -> None:
    await client.get("/api/v1/instances")
    remaining = mesh.script.time_remaining["ListInstances"]
    assert remaining is not None
    assert 0 < remaining <= 10.0 + GRPC_TIMEOUT_ROUNDING


async def test_public_url_setting_shapes_the_webhook_url(mesh: FakeMesh) -> None:
    from gateway.app.main import create_app
    from gateway.app.mesh import MESH_SERVICES
    from tests.gateway.conftest import API_KEY, gateway_settings, override_stubs

    app = create_app(gateway_settings(api_public_url="https://hub.example.com/"))
    override_stubs(app, mesh.channel, dict.fromkeys(MESH_SERVICES, mesh.channel))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://x", headers={"x-api-key": API_KEY}) as c:
        instance = (await c.post("/api/v1/instances", json=whatsapp_instance())).json()
    assert instance["webhook_url"] == "https://hub.example.com/api/v1/webhook/evolution/acme"
