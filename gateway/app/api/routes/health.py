"""GET /health: the standard gRPC health of every mesh service, checked concurrently, open to anyone."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from grpc_health.v1 import health_pb2
from omni.channels.v1 import channels_service_pb2
from omni.ingress.v1 import ingress_service_pb2
from starlette.responses import Response

from gateway.app.api.deps import ChannelsStubDep, HealthStubs, IngressStubDep, SettingsDep
from gateway.app.api.errors import json_response
from gateway.app.api.routes.instances import STATUS_BY_STATE
from gateway.app.api.rpc import call
from gateway.app.mappers.instances import channel_name
from gateway.app.schemas.health import BotHealth, HealthOut
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


async def _bots(ingress: Any, timeout: float) -> dict[str, BotHealth] | None:
    """Every hosted bot's state by instance name; None when ingress could not be asked."""
    try:
        answer = await call(ingress.ListBots, ingress_service_pb2.ListBotsRequest(), timeout=timeout)
    except OmniError:
        return None
    return {
        bot.instance_name: BotHealth(
            channel_type=channel_name(bot.channel),
            status=STATUS_BY_STATE.get(bot.state, "error"),
            detail=bot.detail or None,
        )
        for bot in answer.bots
    }


async def _connections(channels: Any, timeout: float) -> dict[str, int] | None:
    """How many instances are in each recorded connection state; None when channels could not be asked."""
    try:
        answer = await call(channels.CountConnections, channels_service_pb2.CountConnectionsRequest(), timeout=timeout)
    except OmniError:
        return None
    return dict(answer.counts)


@router.get(
    "/health",
    response_model=HealthOut,
    responses={503: {"model": HealthOut, "description": "At least one service is not SERVING."}},
)
async def health(
    stubs: HealthStubs, ingress: IngressStubDep, channels: ChannelsStubDep, settings: SettingsDep
) -> Response:
    """Report each service's gRPC health (503 when any is not SERVING, so a load balancer takes us out) and the
    state of every bot the hub runs and how many WhatsApp connections are in each state (a bot or a number in error
    does not make the hub unhealthy: it is one tenant's account)."""
    names = list(stubs)
    timeout = settings.api_health_timeout_seconds
    statuses, bots, connections = await asyncio.gather(
        asyncio.gather(*(_status_of(stubs[name], timeout) for name in names)),
        _bots(ingress, timeout),
        _connections(channels, timeout),
    )
    services = dict(zip(names, statuses, strict=True))
    healthy = all(status == "SERVING" for status in services.values())
    body = HealthOut(
        status="healthy" if healthy else "unhealthy", services=services, bots=bots, connections=connections
    )
    return json_response(200 if healthy else 503, body.model_dump())
