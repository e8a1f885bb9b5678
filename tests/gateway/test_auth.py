"""x-api-key on every /api/v1 route except the webhooks; /health, /docs and /openapi.json stay open."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.gateway.conftest import API_KEY, whatsapp_instance


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    body: Any = None


PROTECTED = [
    Route("GET", "/api/v1/instances"),
    Route("POST", "/api/v1/instances", whatsapp_instance("newone")),
    Route("GET", "/api/v1/instances/acme"),
    Route("PUT", "/api/v1/instances/acme", {"is_active": False}),
    Route("DELETE", "/api/v1/instances/acme"),
    Route("GET", "/api/v1/instances/acme/qr-code"),
    Route("GET", "/api/v1/instances/acme/status"),
    Route("POST", "/api/v1/acme/send-text", {"recipient": "+5511999999999", "text": "hi"}),
    Route("POST", "/api/v1/acme/send-media", {"recipient": "+5511999999999", "media_url": "https://x.test/a.png"}),
    Route("GET", "/api/v1/traces"),
    Route("GET", "/api/v1/traces/0af7651916cd43dd8448eb211c80319c"),
    Route("GET", "/api/v1/dead-letters"),
    Route("POST", "/api/v1/dead-letters/dead-1/redeliver"),
]

BAD_KEYS = [
    pytest.param(None, id="missing"),
    pytest.param("", id="empty"),
    pytest.param("wrong-key", id="wrong"),
    pytest.param(API_KEY + "x", id="longer"),
    pytest.param(API_KEY[:-1], id="prefix"),
    pytest.param("clé-ünïcode", id="non-ascii"),
]


@pytest.mark.parametrize("route", PROTECTED, ids=lambda r: f"{r.method} {r.path}")
@pytest.mark.parametrize("key", BAD_KEYS)
async def test_protected_routes_refuse_a_missing_or_wrong_key(
    anon: httpx.AsyncClient, route: Route, key: str | None
) -> None:
    """Raw UTF-8 bytes in the header are what a careless client sends: still a 401, never a 500."""
    headers = {} if key is None else {b"x-api-key": key.encode("utf-8")}
    response = await anon.request(route.method, route.path, json=route.body, headers=headers)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["reason"] in {"API_KEY_MISSING", "API_KEY_INVALID"}
    assert isinstance(body["detail"], str)


@pytest.mark.parametrize("path", ["/api/v1/instances", "/api/v1/acme/send-text"])
async def test_key_is_checked_before_the_body_is_judged(anon: httpx.AsyncClient, path: str) -> None:
    response = await anon.post(path, content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 401


@pytest.mark.parametrize("route", PROTECTED, ids=lambda r: f"{r.method} {r.path}")
async def test_protected_routes_accept_the_admin_key(client: httpx.AsyncClient, route: Route) -> None:
    await client.post("/api/v1/instances", json=whatsapp_instance("acme"))
    response = await client.request(route.method, route.path, json=route.body)
    assert response.status_code != 401


@pytest.mark.parametrize(
    "route",
    [
        Route("GET", "/health"),
        Route("GET", "/docs"),
        Route("GET", "/openapi.json"),
        Route("POST", "/api/v1/webhook/evolution/acme", {"event": "messages.upsert"}),
        Route("POST", "/api/v1/webhook/evolution/acme/messages-upsert", {"event": "messages.upsert"}),
    ],
    ids=lambda r: f"{r.method} {r.path}",
)
async def test_open_routes_need_no_key(anon: httpx.AsyncClient, route: Route) -> None:
    response = await anon.request(route.method, route.path, json=route.body)
    assert response.status_code == 200


async def test_docs_serve_swagger_and_the_spec_declares_the_key(anon: httpx.AsyncClient) -> None:
    docs = await anon.get("/docs")
    assert "swagger" in docs.text.lower()
    spec = (await anon.get("/openapi.json")).json()
    assert spec["components"]["securitySchemes"]["ApiKey"] == {
        "type": "apiKey",
        "in": "header",
        "name": "x-api-key",
        "description": "The admin key (AUTOMAGIK_OMNI_API_KEY), or a key scoped to one instance (omni_sk_...).",
    }
    assert {"ApiKey": []} in spec["paths"]["/api/v1/instances"]["get"]["security"]
    assert "security" not in spec["paths"]["/api/v1/webhook/evolution/{instance_name}"]["post"]
    assert "security" not in spec["paths"]["/health"]["get"]
