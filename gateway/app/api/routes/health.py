"""GET /health: the standard gRPC health of every mesh service, checked concurrently, open to anyone."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from grpc_health.v1 import health_pb2
from starlette.responses import Response

from gateway.app.api.deps import HealthStubs, SettingsDep
from gateway.app.api.errors import json_response
from gateway.app.api.rpc import call
from gateway.app.schemas.health import HealthOut
from servicekit.errors import OmniError

router = APIRouter(tags=["health"])


async def _status_of(stub: Any, timeout: float) -> str:
    """SERVING, NOT_SERVING, ... or the failure's kind (UNAVAILABLE, DEADLINE_EXCEEDED) when the check failed."""
    try:
        answer = await call(stub.Check, health_pb2.HealthCheckRequest(service=""), timeout=timeout)
    except OmniError as exc:
        return type(exc).default_reason
    name: str = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
    return name


@router.get(
    "/health",
    response_model=HealthOut,
    responses={503: {"model": HealthOut, "description": "At least one service is not SERVING."}},
)
async def health(stubs: HealthStubs, settings: SettingsDep) -> Response:
    """Report each service's gRPC health; 503 when any is not SERVING (so a load balancer takes us out)."""
    names = list(stubs)
    statuses = await asyncio.gather(*(_status_of(stubs[name], settings.api_health_timeout_seconds) for name in names))
    services = dict(zip(names, statuses, strict=True))
    healthy = all(status == "SERVING" for status in services.values())
    body = HealthOut(status="healthy" if healthy else "unhealthy", services=services)
    return json_response(200 if healthy else 503, body.model_dump())
