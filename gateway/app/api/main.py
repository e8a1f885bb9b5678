"""The /api/v1 router: every REST resource behind the API key, the webhook receivers without it."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from gateway.app.api.deps import require_api_key
from gateway.app.api.routes import (
    access,
    api_keys,
    dead_letters,
    instance_secrets,
    instances,
    messages,
    omni_api,
    traces,
    users,
)
from gateway.app.api.webhooks import evolution, slack

API_PREFIX = "/api/v1"

api_router = APIRouter(prefix=API_PREFIX)
_protected = [Depends(require_api_key)]
api_router.include_router(instances.router, dependencies=_protected)
api_router.include_router(instance_secrets.router, dependencies=_protected)
api_router.include_router(api_keys.router, dependencies=_protected)
api_router.include_router(access.router, dependencies=_protected)
api_router.include_router(traces.router, dependencies=_protected)
api_router.include_router(dead_letters.router, dependencies=_protected)
api_router.include_router(users.router, dependencies=_protected)
api_router.include_router(evolution.router)
api_router.include_router(slack.router)
# Last: their "/{instance}/..." paths must not shadow the literal prefixes above.
api_router.include_router(messages.router, dependencies=_protected)
api_router.include_router(omni_api.router, dependencies=_protected)
