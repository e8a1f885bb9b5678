"""Edge hygiene: body size and JSON depth limits before parsing, per-instance rate limits, CORS, a caller's
traceparent kept as a link only, and the app still healthy after every kind of abuse."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import ValidationError

from gateway.app.api.limits import json_depth_exceeds
from gateway.app.api.rate_limit import TokenBuckets
from gateway.app.main import create_app
from gateway.app.mesh import MESH_SERVICES
from tests.gateway.conftest import API_KEY, FakeMesh, gateway_settings, override_stubs

JSON = {"content-type": "application/json"}
WEBHOOK = "/api/v1/webhook/evolution/acme"
SEND = "/api/v1/acme/send-text"
TEN_MB = 10 * 1024 * 1024


def _app(mesh: FakeMesh, tracer_provider: TracerProvider | None = None, **settings: Any) -> FastAPI:
    app = create_app(gateway_settings(**settings), tracer_provider=tracer_provider)
    override_stubs(app, mesh.channel, dict.fromkeys(MESH_SERVICES, mesh.channel))
    return app


async def _client(app: FastAPI, **headers: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://hub.test", headers={"x-api-key": API_KEY, **headers})


@pytest.fixture
async def small(mesh: FakeMesh) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an app with tiny limits: 1 KiB REST bodies, 4 KiB webhooks, depth 8, 2 sends then 1/s."""
    app = _app(
        mesh,
        max_request_body_bytes=1024,
        max_webhook_body_bytes=4096,
        max_json_depth=8,
        send_rate_limit=1,
        send_rate_burst=2,
        webhook_rate_limit=0.5,
        webhook_rate_burst=1,
    )
    async with await _client(app) as client:
        yield client


async def _still_serving(client: httpx.AsyncClient) -> None:
    """/health and a normal request still answer after the abuse."""
    health = await client.get("/health")
    assert health.status_code == 200, health.text
    sent = await client.post("/api/v1/other/send-text", json={"recipient": "+5511999999999", "text": "hi"})
    assert sent.status_code == 200, sent.text


# --- body size ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("url", [SEND, WEBHOOK])
async def test_a_10_mb_body_is_refused_at_once_with_413(mesh: FakeMesh, url: str) -> None:
    limit = 1024 * 1024
    app = _app(mesh, max_request_body_bytes=limit, max_webhook_body_bytes=limit)
    async with await _client(app) as client:
        started = time.perf_counter()
        response = await client.post(url, content=b"{" + b" " * TEN_MB + b"}", headers=JSON)
        assert time.perf_counter() - started < 2.0
        assert response.status_code == 413
        assert response.json() == {
            "detail": f"request body is larger than {limit} bytes",
            "reason": "BODY_TOO_LARGE",
            "limit_bytes": limit,
        }
        assert mesh.script.calls["ReceiveWebhook"] == []
        assert mesh.script.calls["SendText"] == []
        await _still_serving(client)


async def test_a_chunked_body_is_counted_while_it_streams(small: httpx.AsyncClient, mesh: FakeMesh) -> None:
    received: list[int] = []

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(100):
            received.append(1)
            yield b" " * 512

    response = await small.post(WEBHOOK, content=chunks(), headers=JSON)
    assert response.status_code == 413
    assert response.json()["limit_bytes"] == 4096
    assert mesh.script.calls["ReceiveWebhook"] == []


async def test_webhooks_and_rest_have_their_own_limits(small: httpx.AsyncClient, mesh: FakeMesh) -> None:
    two_kib = {"recipient": "+5511999999999", "text": "x" * 2048}
    rest = await small.post(SEND, json=two_kib)
    assert rest.status_code == 413
    assert rest.json()["limit_bytes"] == 1024
    webhook = await small.post(WEBHOOK, json={"event": "messages.upsert", "data": {"text": "x" * 2048}})
    assert webhook.status_code == 200, webhook.text
    assert len(mesh.script.calls["ReceiveWebhook"]) == 1


async def test_a_body_within_the_limit_reaches_the_route_intact(small: httpx.AsyncClient, mesh: FakeMesh) -> None:
    response = await small.post(SEND, json={"recipient": "+5511999999999", "text": "olá"})
    assert response.status_code == 200, response.text
    assert mesh.script.calls["SendText"][0].text == "olá"


def test_body_limit_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOMAGIK_OMNI_MAX_WEBHOOK_BODY_BYTES", "123456")
    monkeypatch.setenv("AUTOMAGIK_OMNI_MAX_REQUEST_BODY_BYTES", "654321")
    settings = gateway_settings()
    assert (settings.max_webhook_body_bytes, settings.max_request_body_bytes) == (123456, 654321)


# --- JSON depth --------------------------------------------------------------------------------------------------


def _nested(depth: int) -> bytes:
    return b'{"a":' + b"[" * depth + b"]" * depth + b"}"


@pytest.mark.parametrize("depth", [1000, 5000])
@pytest.mark.parametrize("url", [SEND, WEBHOOK])
async def test_json_nested_deeper_than_the_limit_is_400(
    client: httpx.AsyncClient, mesh: FakeMesh, url: str, depth: int
) -> None:
    response = await client.post(url, content=_nested(depth), headers=JSON)
    assert response.status_code == 400
    assert response.json() == {"detail": "JSON nested deeper than 64 levels", "reason": "JSON_TOO_DEEP", "limit": 64}
    assert mesh.script.calls["ReceiveWebhook"] == []
    await _still_serving(client)


async def test_the_depth_limit_is_configurable(small: httpx.AsyncClient, mesh: FakeMesh) -> None:
    assert (await small.post(WEBHOOK, content=_nested(7), headers=JSON)).status_code == 200
    too_deep = await small.post("/api/v1/webhook/evolution/other", content=_nested(8), headers=JSON)
    assert too_deep.status_code == 400
    assert too_deep.json()["limit"] == 8


@pytest.mark.parametrize(
    ("body", "limit", "deeper"),
    [
        (b'{"a": [1, {"b": [2]}]}', 4, False),
        (b'{"a": [1, {"b": [2]}]}', 3, True),
        (b'{"a": "[[[[[[[[[[[[[[[[[[[["}', 2, False),
        (b'{"a": "\\"[[[[[[[[[[[[[[[[[[[[", "b": [[[]]]}', 4, False),
        (b'{"a": "\\\\", "b": [[[[]]]]}', 4, True),
        (b"[[],[],[],[],[],[],[],[],[],[],[],[]]", 2, False),
        (b"[[[" * 10, 2, False),  # not JSON: the parser refuses it, not the depth check
        (b'{"a": ' + b"[" * 100 + b"]" * 100 + b"}", 64, True),
        (b"", 64, False),
    ],
)
def test_json_depth_check(body: bytes, limit: int, deeper: bool) -> None:
    assert json_depth_exceeds(body, limit) is deeper


def test_the_depth_check_is_cheap_on_large_bodies() -> None:
    media = b'{"data": {"base64": "' + b"QUJD" * (4 * 1024 * 1024) + b'"}}'
    many = b"[" + b",".join([b'{"k": [[["v"]]]}'] * 200_000) + b"]"
    started = time.perf_counter()
    assert not json_depth_exceeds(media, 64)
    assert not json_depth_exceeds(many, 64)
    assert time.perf_counter() - started < 1.0


# --- rate limits -------------------------------------------------------------------------------------------------


async def test_sends_over_the_rate_get_429_with_retry_after_and_other_instances_are_unaffected(
    small: httpx.AsyncClient, mesh: FakeMesh
) -> None:
    body = {"recipient": "+5511999999999", "text": "hi"}
    statuses = [(await small.post(SEND, json=body)).status_code for _ in range(2)]
    assert statuses == [200, 200]
    refused = await small.post(SEND, json=body)
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.json()["reason"] == "RATE_LIMITED"
    assert refused.json()["retry_after"] == int(refused.headers["retry-after"])
    assert len(mesh.script.calls["SendText"]) == 2
    other = await small.post("/api/v1/beta/send-text", json=body)
    assert other.status_code == 200, other.text
    # Reads are not sends: never limited.
    assert (await small.get("/api/v1/traces")).status_code == 200


async def test_webhooks_over_the_rate_get_429(small: httpx.AsyncClient, mesh: FakeMesh) -> None:
    assert (await small.post(WEBHOOK, json={"event": "x"})).status_code == 200
    refused = await small.post(WEBHOOK + "/messages-upsert", json={"event": "x"})
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "2"  # 0.5 token/s: the next token in 2 s
    assert len(mesh.script.calls["ReceiveWebhook"]) == 1
    assert (await small.post("/api/v1/webhook/evolution/beta", json={"event": "x"})).status_code != 429


async def test_default_limits_let_a_burst_of_hundreds_through(client: httpx.AsyncClient) -> None:
    body = {"recipient": "+5511999999999", "text": "hi"}
    statuses = {(await client.post(SEND, json=body)).status_code for _ in range(300)}
    assert statuses == {200}


def test_token_buckets_refill_and_stay_bounded() -> None:
    now = [0.0]
    buckets = TokenBuckets(rate=10, burst=2, max_buckets=3, clock=lambda: now[0])
    assert [buckets.take("a") for _ in range(2)] == [0.0, 0.0]
    assert buckets.take("a") == pytest.approx(0.1)
    now[0] += 0.1
    assert buckets.take("a") == 0.0
    for name in ("b", "c", "d", "e"):
        buckets.take(name)
    assert len(buckets) == 3


# --- CORS --------------------------------------------------------------------------------------------------------


async def test_cors_preflight_from_an_allowed_and_a_refused_origin(mesh: FakeMesh) -> None:
    app = _app(mesh, cors_origins="https://ui.example, https://admin.example")
    async with await _client(app) as client:
        preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "x-api-key"}
        allowed = await client.options(SEND, headers={"Origin": "https://admin.example", **preflight})
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://admin.example"
        refused = await client.options(SEND, headers={"Origin": "https://evil.example", **preflight})
        assert refused.status_code == 400
        assert "access-control-allow-origin" not in refused.headers


async def test_no_cors_headers_without_configured_origins(client: httpx.AsyncClient) -> None:
    response = await client.get("/health", headers={"Origin": "https://ui.example"})
    assert "access-control-allow-origin" not in response.headers


def test_a_wildcard_origin_is_refused_in_production() -> None:
    with pytest.raises(ValidationError, match="CORS"):
        gateway_settings(cors_origins="*", environment="production")
    assert gateway_settings(cors_origins="*", environment="development").cors_origin_list == ["*"]


# --- trace context -----------------------------------------------------------------------------------------------

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


@pytest.mark.parametrize("url", [WEBHOOK, SEND])
async def test_a_callers_traceparent_is_a_link_not_the_parent(mesh: FakeMesh, url: str) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = _app(mesh, tracer_provider=provider)
    headers = {"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01", "tracestate": "vendor=x", "baggage": "user=1"}
    async with await _client(app) as client:
        response = await client.post(url, json={"recipient": "+5511999999999", "text": "hi"}, headers=headers)
    assert response.status_code == 200, response.text
    (span,) = exporter.get_finished_spans()
    assert span.parent is None
    assert format(span.context.trace_id, "032x") != CALLER_TRACE
    assert [(format(link.context.trace_id, "032x"), format(link.context.span_id, "016x")) for link in span.links] == [
        (CALLER_TRACE, CALLER_SPAN)
    ]
    assert mesh.script.calls["ReceiveWebhook" if url == WEBHOOK else "SendText"]


async def test_a_malformed_traceparent_is_dropped_without_a_link(mesh: FakeMesh) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = _app(mesh, tracer_provider=provider)
    async with await _client(app, traceparent="garbage") as client:
        assert (await client.post(WEBHOOK, json={"event": "x"})).status_code == 200
    (span,) = exporter.get_finished_spans()
    assert span.parent is None
    assert list(span.links) == []


# --- secrets in bodies -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("url", [SEND, WEBHOOK])
async def test_a_body_of_repeated_secret_words_is_handled_in_bounded_time(client: httpx.AsyncClient, url: str) -> None:
    words = "token secret apikey password authorization signature " * 20_000
    body = {"recipient": "+5511999999999", "text": words[:60_000], "token": words, "x-omni-webhook-secret": words}
    started = time.perf_counter()
    response = await client.post(url, json=body)
    assert time.perf_counter() - started < 2.0
    assert response.status_code < 500, response.text
    await _still_serving(client)


async def test_strangers_cannot_spend_an_instances_allowance(small: httpx.AsyncClient, mesh: FakeMesh) -> None:
    """Requests refused for authentication give their token back, so a flood without the instance's key or webhook
    secret cannot get its real traffic throttled."""
    body = {"recipient": "+5511999999999", "text": "hi"}
    for _ in range(5):
        assert (await small.post(SEND, json=body, headers={"x-api-key": "not-the-key"})).status_code == 401
    assert [(await small.post(SEND, json=body)).status_code for _ in range(2)] == [200, 200]
