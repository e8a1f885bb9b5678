"""RouterService ApiKey messages -> REST answers."""

from __future__ import annotations

from omni.router.v1 import router_service_pb2

from gateway.app.mappers.timestamps import to_datetime
from gateway.app.schemas.api_keys import ApiKeyCreated, ApiKeyOut


def api_key_out(key: router_service_pb2.ApiKey) -> ApiKeyOut:
    """A listed key."""
    return ApiKeyOut(
        id=key.id, prefix=key.prefix, created_at=to_datetime(key.created_at), last_used_at=to_datetime(key.last_used_at)
    )


def api_key_created(answer: router_service_pb2.CreateApiKeyResponse) -> ApiKeyCreated:
    """A new key with its clear value."""
    return ApiKeyCreated(
        id=answer.api_key.id,
        key=answer.key,
        prefix=answer.api_key.prefix,
        created_at=to_datetime(answer.api_key.created_at),
    )
