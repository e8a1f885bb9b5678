"""Scoped API keys over REST: issue (shown once), list, revoke; the gateway's short memory of resolved keys; and the
admin key a production gateway refuses to start with."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from gateway.app.config import WeakApiKeyError
from gateway.app.main import create_app
from servicekit.errors import UnavailableError
from servicekit.principal_cache import MISSING, PrincipalCache
from servicekit.principals import Principal
from tests.gateway.conftest import FakeMesh, gateway_settings, whatsapp_instance
from tests.gateway.process import gateway_exit


async def test_issue_list_use_and_revoke_a_key(client: httpx.AsyncClient, anon: httpx.AsyncClient) -> None:
    await client.post("/api/v1/instances", json=whatsapp_instance("acme"))
    created = await client.post("/api/v1/instances/acme/keys")
    assert created.status_code == 201
    body = created.json()
    assert set(body) == {"id", "key", "prefix", "created_at"}
    assert body["key"].startswith(body["prefix"])

    listed = (await client.get("/api/v1/instances/acme/keys")).json()["keys"]
    assert listed == [
        {"id": body["id"], "prefix": body["prefix"], "created_at": body["created_at"], "last_used_at": None}
    ]
    assert body["key"] not in str(listed)

    scoped = {"x-api-key": body["key"]}
    assert (await anon.get("/api/v1/instances/acme", headers=scoped)).status_code == 200
    revoked = await client.delete(f"/api/v1/instances/acme/keys/{body['id']}")
    assert revoked.status_code == 204
    # At once on this gateway, although the key's answer was cached a moment ago.
    assert (await anon.get("/api/v1/instances/acme", headers=scoped)).status_code == 401
    assert (await client.delete(f"/api/v1/instances/acme/keys/{body['id']}")).status_code == 404


async def test_keys_of_an_unknown_instance_are_404(client: httpx.AsyncClient) -> None:
    assert (await client.post("/api/v1/instances/ghost/keys")).status_code == 404
    assert (await client.get("/api/v1/instances/ghost/keys")).status_code == 404


async def test_a_busy_key_is_resolved_once_by_the_router(
    mesh: FakeMesh, client: httpx.AsyncClient, anon: httpx.AsyncClient
) -> None:
    await client.post("/api/v1/instances", json=whatsapp_instance("acme"))
    key = mesh.router.add_api_key("acme")
    for _ in range(5):
        assert (await anon.get("/api/v1/acme/channels", headers={"x-api-key": key})).status_code == 200
    assert len(mesh.script.calls["AuthenticateApiKey"]) == 1


async def test_a_scoped_key_with_a_broken_body_is_told_so_not_401(
    mesh: FakeMesh, client: httpx.AsyncClient, anon: httpx.AsyncClient
) -> None:
    await client.post("/api/v1/instances", json=whatsapp_instance("acme"))
    key = mesh.router.add_api_key("acme")
    headers = {"x-api-key": key, "content-type": "application/json"}
    response = await anon.post("/api/v1/acme/send-text", content=b"{not json", headers=headers)
    assert response.status_code == 400


async def test_router_down_is_503_for_a_scoped_key_and_401_for_junk(app: FastAPI, mesh: FakeMesh) -> None:
    """A key that cannot be checked is not called wrong; a key that cannot be one is refused without asking."""
    mesh.script.fail("AuthenticateApiKey", UnavailableError("router down"))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://hub.test") as http:
        scoped = await http.get("/api/v1/traces", headers={"x-api-key": "omni_sk_" + "q" * 43})
        junk = await http.get("/api/v1/traces", headers={"x-api-key": "junk"})
    assert scoped.status_code == 503
    assert junk.status_code == 401


def test_cache_keeps_hits_longer_than_misses_and_stays_bounded() -> None:
    now = [0.0]
    cache = PrincipalCache(hit_seconds=5, miss_seconds=2, max_entries=3, clock=lambda: now[0])
    hit = Principal("scoped", instance_name="acme", key_id="k1")
    cache.put("omni_sk_hit", hit)
    cache.put("omni_sk_miss", None)
    now[0] = 3.0
    assert cache.get("omni_sk_hit") == hit
    assert cache.get("omni_sk_miss") is MISSING
    for i in range(10):
        cache.put(f"omni_sk_{i}", None)
    assert len(cache) == 3
    cache.put("omni_sk_hit", hit)
    cache.forget(instance_name="acme")
    assert cache.get("omni_sk_hit") is MISSING


def test_cache_holds_no_key_in_clear() -> None:
    cache = PrincipalCache()
    key = "omni_sk_" + "s3cr3t" * 7
    cache.put(key, Principal("scoped", instance_name="acme", key_id="k1"))
    assert key.encode() not in repr(vars(cache)).encode()
    assert all(key.encode() not in digest for digest in cache._entries)


@pytest.mark.parametrize(
    "key",
    [
        "change-me",
        "CHANGEME",
        "your-api-key",
        "short-but-random-Zq81x",
        "change-me-to-a-long-random-secret-in-production",
    ],
)
def test_production_refuses_a_short_or_example_admin_key(key: str) -> None:
    with pytest.raises(WeakApiKeyError, match="AUTOMAGIK_OMNI_API_KEY"):
        create_app(gateway_settings(api_key=key, environment="production"))


def test_production_accepts_a_long_random_admin_key_and_development_any() -> None:
    create_app(gateway_settings(api_key="9f4c1e7ab2d84e0f96a3c5d7e8b1f2a4", environment="production"))
    create_app(gateway_settings(api_key="change-me", environment="development"))


async def test_production_process_refuses_the_example_key(tmp_path: Path) -> None:
    code, stderr = await gateway_exit(tmp_path, {"AUTOMAGIK_OMNI_API_KEY": "change-me", "ENVIRONMENT": "production"})
    assert code == 2
    assert b"AUTOMAGIK_OMNI_API_KEY is an example value" in stderr
