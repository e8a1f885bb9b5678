"""The webhook secret at the edge: rotation routes reveal new secrets once, and an opt-in `?secret=` reaches ingress
as a header without ever being recorded (span attributes, the URL ingress sees)."""

from __future__ import annotations

import httpx
from fastapi import FastAPI
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gateway.app.main import create_app
from gateway.app.mesh import MESH_SERVICES
from tests.gateway.conftest import API_KEY, FakeMesh, gateway_settings, override_stubs, whatsapp_instance

SECRET = "query-secret-value-0123456789"


def _traced_app(mesh: FakeMesh, exporter: InMemorySpanExporter) -> FastAPI:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = create_app(gateway_settings(), tracer_provider=provider)
    override_stubs(app, mesh.channel, dict.fromkeys(MESH_SERVICES, mesh.channel))
    return app


async def test_a_query_secret_becomes_a_header_and_is_never_recorded(mesh: FakeMesh) -> None:
    exporter = InMemorySpanExporter()
    transport = httpx.ASGITransport(app=_traced_app(mesh, exporter))
    async with httpx.AsyncClient(transport=transport, base_url="http://hub.test") as client:
        response = await client.post(
            f"/api/v1/webhook/evolution/acme?secret={SECRET}&keep=1",
            content=b"{}",
            headers={"content-type": "application/json"},
        )
    assert response.status_code == 200, response.text
    [forwarded] = mesh.script.calls["ReceiveWebhook"]
    assert forwarded.headers["x-omni-webhook-secret"] == SECRET
    spans = exporter.get_finished_spans()
    assert spans
    for span in spans:
        recorded = repr(dict(span.attributes or {})) + span.name
        assert SECRET not in recorded
    assert any("keep=1" in str((span.attributes or {}).get("url.query", "")) for span in spans)


async def test_rotation_routes_answer_the_new_secret_once(client: httpx.AsyncClient, mesh: FakeMesh) -> None:
    created = await client.post("/api/v1/instances", json=whatsapp_instance())
    assert created.status_code == 201, created.text
    first = created.json()["webhook_secret"]

    rotated = await client.post("/api/v1/instances/acme/webhook-secret/rotate")
    assert rotated.status_code == 200, rotated.text
    body = rotated.json()
    assert body["webhook_secret"] not in ("", first)
    assert body["previous_valid_until"] is not None

    signing = await client.post("/api/v1/instances/acme/agent-signing-secret/rotate")
    assert signing.status_code == 200, signing.text
    assert signing.json()["agent_signing_secret"].startswith("whsec_")

    shown = (await client.get("/api/v1/instances/acme")).json()
    assert body["webhook_secret"] not in str(shown)
    assert signing.json()["agent_signing_secret"] not in str(shown)


async def test_rotating_an_unknown_instance_is_404(client: httpx.AsyncClient) -> None:
    for route in ("webhook-secret", "agent-signing-secret"):
        response = await client.post(f"/api/v1/instances/ghost/{route}/rotate")
        assert response.status_code == 404, response.text


async def test_rotation_needs_the_api_key(anon: httpx.AsyncClient) -> None:
    response = await anon.post("/api/v1/instances/acme/webhook-secret/rotate")
    assert response.status_code == 401
    assert API_KEY not in response.text
