"""Scoped API keys: /api/v1/instances/{name}/keys, backed by RouterService. Admin only.

A scoped key is refused (403) before anything is looked up, whatever instance the path names: key management must
not tell a scoped caller which instances exist.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from omni.router.v1 import router_service_pb2

from gateway.app.api.deps import AdminOnly, RouterStubDep, SettingsDep, principal_cache_of
from gateway.app.api.rpc import call
from gateway.app.mappers.api_keys import api_key_created, api_key_out
from gateway.app.schemas.api_keys import ApiKeyCreated, ApiKeyList

router = APIRouter(prefix="/instances", tags=["api-keys"], dependencies=[AdminOnly])


@router.post("/{name}/keys", status_code=201, response_model=ApiKeyCreated)
async def create_api_key(name: str, stub: RouterStubDep, settings: SettingsDep) -> ApiKeyCreated:
    """Issue a key that reaches this instance only; the key is in this answer only. 404 when the instance is
    unknown."""
    answer = await call(
        stub.CreateApiKey,
        router_service_pb2.CreateApiKeyRequest(instance_name=name),
        timeout=settings.api_rpc_timeout_seconds,
    )
    return api_key_created(answer)


@router.get("/{name}/keys", response_model=ApiKeyList)
async def list_api_keys(name: str, stub: RouterStubDep, settings: SettingsDep) -> ApiKeyList:
    """The instance's keys (prefixes only), oldest first. 404 when the instance is unknown."""
    answer = await call(
        stub.ListApiKeys,
        router_service_pb2.ListApiKeysRequest(instance_name=name),
        timeout=settings.api_rpc_timeout_seconds,
    )
    return ApiKeyList(keys=[api_key_out(key) for key in answer.api_keys])


@router.delete("/{name}/keys/{key_id}", status_code=204, response_class=Response)
async def revoke_api_key(
    name: str, key_id: str, stub: RouterStubDep, settings: SettingsDep, request: Request
) -> Response:
    """Revoke a key: it stops working at once on this gateway, within seconds on the others. 404 when the instance
    has no such key."""
    await call(
        stub.RevokeApiKey,
        router_service_pb2.RevokeApiKeyRequest(instance_name=name, id=key_id),
        timeout=settings.api_rpc_timeout_seconds,
    )
    principal_cache_of(request.app).forget(key_id=key_id)
    return Response(status_code=204)
