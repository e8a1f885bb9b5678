"""POST /api/v1/webhook/evolution/{instance_name}[/{event_suffix}]: Evolution API webhooks, documented.

These routes put the endpoint in the OpenAPI schema and serve it when the app runs without the fast path. In
production `fast_path.WebhookFastPath` answers the same URLs ahead of FastAPI's routing (the webhook is the hot
path) through the same `receivers.forward`, so the two cannot drift; the tests exercise both.

No API key: Evolution cannot send ours. The instance's webhook secret is checked by ingress's receiver.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from gateway.app.api.deps import IngressStubDep, SettingsDep
from gateway.app.api.webhooks.receivers import WEBHOOK_CHANNELS, forward, webhook_headers
from gateway.app.schemas.webhooks import WebhookAck

router = APIRouter(prefix="/webhook/evolution", tags=["webhooks"])

EVOLUTION = WEBHOOK_CHANNELS["evolution"]

_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {"model": WebhookAck, "description": "Stored (accepted), already stored (duplicate) or nothing to do."},
    400: {"description": "The body is not a JSON object."},
    401: {"description": "No valid webhook secret (also for an unknown instance)."},
    503: {"description": "Storage is down; Evolution retries."},
}


async def _receive(instance_name: str, request: Request, stub: IngressStubDep, settings: SettingsDep) -> Response:
    body = await request.body()
    status, payload = await forward(stub, settings, EVOLUTION, instance_name, body, webhook_headers(request.scope))
    return Response(content=payload, status_code=status, media_type="application/json")


@router.post("/{instance_name}", responses=_RESPONSES, response_model=None)
async def evolution_webhook(
    instance_name: str, request: Request, stub: IngressStubDep, settings: SettingsDep
) -> Response:
    """Receive one Evolution event for the hub instance named in the URL."""
    return await _receive(instance_name, request, stub, settings)


@router.post("/{instance_name}/{event_suffix}", responses=_RESPONSES, response_model=None)
async def evolution_webhook_by_event(
    instance_name: str, event_suffix: str, request: Request, stub: IngressStubDep, settings: SettingsDep
) -> Response:
    """The same, for Evolution's "webhook by events" mode, which appends e.g. /messages-upsert to the URL."""
    return await _receive(instance_name, request, stub, settings)
