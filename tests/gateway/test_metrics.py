"""GET /metrics: every service's MetricsService answer (real gRPC servers) merged into one Prometheus page, parsed
with the Prometheus text parser; open by default, the admin key when AUTOMAGIK_OMNI_METRICS_REQUIRE_KEY is true."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import grpc
import httpx
import pytest
from fastapi import FastAPI
from omni.common.v1 import metrics_pb2_grpc
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.parser import text_string_to_metric_families

from gateway.app.main import create_app
from gateway.app.mesh import MESH_SERVICES, Mesh
from servicekit.grpc_clients import open_channel
from servicekit.metrics import MetricsServicer, render
from tests.gateway.conftest import API_KEY, FakeMesh, gateway_settings, override_stubs


async def serve(registry: CollectorRegistry) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server()
    metrics_pb2_grpc.add_MetricsServiceServicer_to_server(MetricsServicer(registry), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


@pytest.fixture
async def metrics_app(mesh: FakeMesh) -> AsyncIterator[FastAPI]:
    ingress_registry = CollectorRegistry()
    Counter("omni_ignored_webhooks", "ignored", ("channel", "traced"), registry=ingress_registry).labels(
        channel="whatsapp", traced="true"
    ).inc(3)
    tracing_registry = CollectorRegistry()
    Counter("omni_messages", "messages", ("channel", "status"), registry=tracing_registry).labels(
        channel="whatsapp", status="sent"
    ).inc(2)
    histogram = Histogram("omni_agent_call_seconds", "agent", buckets=(0.1, 1.0), registry=tracing_registry)
    histogram.observe(0.05)
    histogram.observe(0.5)
    ingress_server, ingress_port = await serve(ingress_registry)
    tracing_server, tracing_port = await serve(tracing_registry)
    channels = {
        "ingress": open_channel(f"127.0.0.1:{ingress_port}", tracing=False),
        "tracing": open_channel(f"127.0.0.1:{tracing_port}", tracing=False),
        # Nothing listens there: that service is reported down, the scrape still succeeds.
        "router": open_channel("127.0.0.1:1", tracing=False),
    }
    app = create_app(gateway_settings())
    override_stubs(app, mesh.channel, dict.fromkeys(MESH_SERVICES, mesh.channel))
    base: Mesh = app.state.mesh
    app.state.mesh = dataclasses.replace(
        base, metrics={name: metrics_pb2_grpc.MetricsServiceStub(channel) for name, channel in channels.items()}
    )
    try:
        yield app
    finally:
        for channel in channels.values():
            await channel.close(None)
        await ingress_server.stop(None)
        await tracing_server.stop(None)


async def scrape(app: FastAPI, **headers: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://hub.test", headers=headers) as client:
        return await client.get("/metrics")


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_one_page_from_every_service(metrics_app: FastAPI) -> None:
    response = await scrape(metrics_app)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    got = samples(response.text)
    sent = {("channel", "whatsapp"), ("status", "sent"), ("service", "tracing")}
    assert got[("omni_messages_total", frozenset(sent))] == 2
    ignored = {("channel", "whatsapp"), ("traced", "true"), ("service", "ingress")}
    assert got[("omni_ignored_webhooks_total", frozenset(ignored))] == 3
    bucket = {("le", "0.1"), ("service", "tracing")}
    assert got[("omni_agent_call_seconds_bucket", frozenset(bucket))] == 1
    assert got[("omni_agent_call_seconds_count", frozenset({("service", "tracing")}))] == 2
    families = {f.name: f.type for f in text_string_to_metric_families(response.text)}
    assert families["omni_agent_call_seconds"] == "histogram"
    assert families["omni_messages"] == "counter"
    up = {labels: value for (name, labels), value in got.items() if name == "omni_metrics_source_up"}
    assert up == {
        frozenset({("service", "ingress")}): 1,
        frozenset({("service", "tracing")}): 1,
        frozenset({("service", "router")}): 0,
    }


async def test_the_admin_key_when_required(metrics_app: FastAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOMAGIK_OMNI_METRICS_REQUIRE_KEY", "true")
    anonymous = await scrape(metrics_app)
    assert anonymous.status_code == 401
    assert anonymous.json()["detail"]
    assert (await scrape(metrics_app, **{"x-api-key": "wrong"})).status_code == 401
    assert (await scrape(metrics_app, **{"x-api-key": API_KEY})).status_code == 200


def test_render_merges_families_of_the_same_name() -> None:
    first, second = CollectorRegistry(), CollectorRegistry()
    Counter("omni_x", "x", registry=first).inc()
    Counter("omni_x", "x", registry=second).inc(4)
    from servicekit.metrics import families_to_proto

    text = render({"a": families_to_proto(first), "b": families_to_proto(second)}).decode()
    assert text.count("# TYPE omni_x") == 1
    got = samples(text)
    assert got[("omni_x_total", frozenset({("service", "a")}))] == 1
    assert got[("omni_x_total", frozenset({("service", "b")}))] == 4
