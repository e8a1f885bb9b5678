"""Tenancy end to end, through the real processes: only the channel's own webhooks reach an agent, Omni registers
the secret with Evolution itself, and no secret is ever readable outside the one-time reveals."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from examples.agent_echo import EchoAgent
from simulators.evolution import EvolutionSimulator, text_upsert
from tests.e2e.conftest import World, running_mesh
from tests.helpers.mesh import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

WEBHOOK_PATH = "/api/v1/webhook/evolution/{name}"


def jwt(secret: str, *, exp: float) -> str:
    """The HS256 JWT Evolution sends with its `jwt_key` option."""

    def part(value: object) -> str:
        return base64.urlsafe_b64encode(orjson.dumps(value)).rstrip(b"=").decode()

    head = part({"alg": "HS256", "typ": "JWT"})
    claims = part({"iat": int(exp) - 600, "exp": int(exp), "app": "evolution", "action": "webhook"})
    signature = hmac.new(secret.encode(), f"{head}.{claims}".encode(), hashlib.sha256).digest()
    return f"{head}.{claims}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


async def post(world: World, name: str, envelope: dict[str, Any], headers: dict[str, str]) -> int:
    url = world.mesh.base_url + WEBHOOK_PATH.format(name=name)
    async with aiohttp.ClientSession() as session, session.post(url, json=envelope, headers=headers) as response:
        return response.status


async def test_omni_registers_its_secret_with_evolution_and_the_simulator_is_answered(world: World) -> None:
    name = await world.new_instance()
    secret = world.mesh.webhook_secrets[name]
    hook = world.evolution.webhook_of(name)
    assert hook is not None
    assert hook["url"] == world.mesh.base_url + WEBHOOK_PATH.format(name=name)
    assert hook["headers"] == {"x-omni-webhook-secret": secret}
    # Evolution itself delivers, with the header it was given: the message is answered.
    chat = f"55{uuid.uuid4().int % 10**11:011d}@s.whatsapp.net"
    status = await world.evolution.emit(
        name, "messages.upsert", text_upsert(name, chat, "hello from evolution")["data"]
    )
    assert status == 200
    await eventually(lambda: _replied(world, name, chat))


async def _replied(world: World, name: str, chat: str) -> bool:
    return any(m.instance == name and m.remote_jid == chat for m in world.evolution.sent)


async def test_forged_webhooks_are_401_store_nothing_and_reach_no_agent(world: World) -> None:
    victim = await world.new_instance()
    neighbour = await world.new_instance()
    secret = world.mesh.webhook_secrets[victim]
    other = world.mesh.webhook_secrets[neighbour]
    calls_before = len(world.agent.calls)
    forgeries = {
        "no secret": {},
        "wrong secret": {"x-omni-webhook-secret": "not-the-secret-at-all-000"},
        "another instance's secret": {"x-omni-webhook-secret": other},
        "expired JWT": {"authorization": f"Bearer {jwt(secret, exp=time.time() - 120)}"},
        "JWT of another instance": {"authorization": f"Bearer {jwt(other, exp=time.time() + 600)}"},
    }
    chat = "5511988887777@s.whatsapp.net"
    for label, headers in forgeries.items():
        envelope = text_upsert(victim, chat, f"forged: {label}")
        assert await post(world, victim, envelope, headers) == 401, label
    # An unknown instance answers exactly like a wrong secret.
    assert (
        await post(world, "no-such-instance", text_upsert("x", chat, "probe"), {"x-omni-webhook-secret": secret}) == 401
    )
    # A valid JWT passes (proves the check above is not refusing everything).
    good = text_upsert(victim, "5511900001111@s.whatsapp.net", "signed by jwt")
    assert await post(world, victim, good, {"authorization": f"Bearer {jwt(secret, exp=time.time() + 600)}"}) == 200
    await eventually(lambda: _agent_saw(world.agent, "signed by jwt"))
    assert not any("forged" in str(call.get("message")) for call in world.agent.calls[calls_before:])
    code, traces = await world.mesh.get_json("/api/v1/traces", instance_name=victim, page_size=100)
    assert code == 200
    assert all("forged" not in orjson.dumps(t).decode() for t in traces["traces"])
    assert not any(m.remote_jid == chat for m in world.evolution.sent)


async def _agent_saw(agent: EchoAgent, text: str) -> bool:
    return any(call.get("message") == text for call in agent.calls)


async def test_rotation_re_registers_and_the_old_secret_works_during_the_grace(world: World) -> None:
    name = await world.new_instance()
    old = world.mesh.webhook_secrets[name]
    async with world.mesh.client.post(f"/api/v1/instances/{name}/webhook-secret/rotate") as response:
        assert response.status == 200
        new = (await response.json())["webhook_secret"]
    hook = world.evolution.webhook_of(name)
    assert hook is not None
    assert hook["headers"] == {"x-omni-webhook-secret": new}
    for secret in (old, new):
        envelope = text_upsert(name, "5511977776666@s.whatsapp.net", f"with {secret[:6]}")
        assert await post(world, name, envelope, {"x-omni-webhook-secret": secret}) == 200


@pytest.mark.parametrize("database", ["sqlite"])
async def test_no_secret_is_readable_anywhere_but_the_one_time_reveals(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], database: str
) -> None:
    """Distinctive secrets go in; after messages flow, no response, log line, trace or database byte holds them."""
    marker = uuid.uuid4().hex[:12]
    secrets = {
        "evolution_key": f"EVOKEY{marker}evolution",
        "agent_api_key": f"AGENTKEY{marker}agent",
        "webhook_secret": f"WEBHOOK{marker}webhook",
    }
    evolution = EvolutionSimulator()
    agent = EchoAgent(api_key=secrets["agent_api_key"])
    await evolution.start()
    await agent.start()
    revealed: list[str] = []
    seen: list[str] = []
    try:
        async with running_mesh(tmp_path / "mesh", database, extra_env={"LOG_LEVEL": "DEBUG"}) as mesh:
            evolution.add_instance("tenant", token=secrets["evolution_key"])
            created = await mesh.create_instance(
                name="tenant",
                channel_type="whatsapp",
                evolution_url=evolution.url,
                whatsapp_instance="tenant",
                agent_api_url=agent.url,
                **secrets,
            )
            revealed = [created["webhook_secret"], created["agent_signing_secret"]]
            seen.append(
                orjson.dumps(
                    {k: v for k, v in created.items() if k not in ("webhook_secret", "agent_signing_secret")}
                ).decode()
            )
            chat = "5511955554444@s.whatsapp.net"
            for i in range(3):
                envelope = text_upsert("tenant", chat, f"message {i}")
                async with (
                    aiohttp.ClientSession() as session,
                    session.post(
                        mesh.base_url + WEBHOOK_PATH.format(name="tenant"),
                        json=envelope,
                        headers={"x-omni-webhook-secret": secrets["webhook_secret"]},
                    ) as response,
                ):
                    assert response.status == 200
            await evolution.wait_for_sent(3, timeout=20)
            # A query-string secret (the opt-in) is as invisible as the header.
            async with (
                aiohttp.ClientSession() as session,
                session.post(
                    mesh.base_url + WEBHOOK_PATH.format(name="tenant") + f"?secret={secrets['webhook_secret']}",
                    json=text_upsert("tenant", chat, "via query"),
                ) as response,
            ):
                assert response.status == 200
            await evolution.wait_for_sent(4, timeout=20)

            async def traced() -> list[Any] | None:
                _, page = await mesh.get_json("/api/v1/traces", instance_name="tenant", page_size=50)
                done = [t for t in page["traces"] if t["status"] == "sent"]
                return done if len(done) >= 4 else None

            traces = await eventually(traced)
            for path in [
                "/api/v1/instances",
                "/api/v1/instances/tenant",
                "/api/v1/instances/tenant/status",
                *(f"/api/v1/traces/{t['trace_id']}" for t in traces),
            ]:
                _, body = await mesh.get_json(path)
                seen.append(orjson.dumps(body).decode())
        logs = capfd.readouterr()
        assert "router" in logs.out  # the processes' DEBUG output was captured, so the scan below means something
        seen.append(logs.out + logs.err)
        every_secret = [*secrets.values(), *revealed]
        for text in seen:
            for secret in every_secret:
                assert secret not in text
        files = [p for p in (tmp_path / "mesh").rglob("*") if p.is_file()]
        assert any(p.suffix == ".db" for p in files)
        for path in files:
            data = path.read_bytes()
            for secret in every_secret:
                assert secret.encode() not in data, f"{secret[:10]}... in clear in {path.name}"
    finally:
        await agent.stop()
        await evolution.stop()
