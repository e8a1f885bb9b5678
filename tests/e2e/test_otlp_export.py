"""OTLP export end to end: the mesh started with the standard OTEL_EXPORTER_OTLP_* variables pointing at a local
OTLP collector; one WhatsApp message's spans reach it under the trace id GET /api/v1/traces shows, redacted as
the trace API shows them. SQLite only: forwarding happens after the store, whatever the database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from examples.agent_echo import EchoAgent
from simulators.evolution import EvolutionSimulator, text_upsert
from tests.e2e.conftest import AGENT_KEY, World, running_mesh
from tests.helpers.mesh import eventually
from tests.helpers.otlp_collector import OtlpCollector

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

MARIA = "5521991234567@s.whatsapp.net"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def collector() -> AsyncIterator[OtlpCollector]:
    fake = OtlpCollector()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def otlp_world(collector: OtlpCollector, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    evolution = EvolutionSimulator()
    agent = EchoAgent(api_key=AGENT_KEY)
    await evolution.start()
    await agent.start()
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_HEADERS": "x-tenant=omni%20hub",
    }
    data_dir: Path = tmp_path_factory.mktemp("otlp-mesh")
    try:
        async with running_mesh(data_dir, "sqlite", extra_env=env) as mesh:
            yield World(mesh, evolution, agent, "sqlite")
    finally:
        await agent.stop()
        await evolution.stop()


async def test_a_message_s_spans_reach_the_operator_s_collector(otlp_world: World, collector: OtlpCollector) -> None:
    world = otlp_world
    instance = await world.new_instance()
    async with (
        aiohttp.ClientSession() as session,
        session.post(world.mesh.webhook_url(instance), json=text_upsert(instance, MARIA, "Oi, OTLP")) as response,
    ):
        assert response.status == 200
        body = await response.json()
    assert body["status"] == "accepted"
    trace_id = body["trace_id"]

    async def listed() -> bool:
        code, listing = await world.mesh.get_json("/api/v1/traces", instance_name=instance, status="sent")
        return code == 200 and [t["trace_id"] for t in listing["traces"]] == [trace_id]

    await eventually(listed, timeout=20)
    names = await collector.wait_for(trace_id, "ingress.accept", "router.route", "agent.call", "channels.send")
    assert names, names
    services = {service for service, span in collector.spans() if span.trace_id.hex() == trace_id}
    assert {"omni-ingress", "omni-router", "omni-channels"} <= services
    assert all(m.get("x-tenant") == "omni hub" for m in collector.metadata)

    # The agent's spans would join this trace: the agent got the same trace id in its traceparent.
    call = next(c for c in world.agent.calls if c["context"]["instance"] == instance)
    headers = world.agent.headers[world.agent.calls.index(call)]
    assert headers["traceparent"].split("-")[1] == trace_id

    # Same redaction as the trace API: the agent's key never leaves in a forwarded attribute.
    forwarded = [span for _, span in collector.spans() if span.trace_id.hex() == trace_id]
    texts = [a.value.string_value for span in forwarded for a in span.attributes]
    assert not any(AGENT_KEY in text for text in texts)
    await asyncio.sleep(0)
