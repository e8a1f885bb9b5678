"""POST /api/v1/webhook/slack/{instance_name}: the Slack Events API Request URL of an instance, documented.

Like the Evolution route, it is answered ahead of FastAPI's routing by `fast_path.WebhookFastPath` in production and
served here when the app runs without it; both go through `receivers.forward`. No API key: Slack signs each request
with the app's signing secret, which ingress's Slack receiver verifies over the raw body before anything is parsed.
A `url_verification` request is answered with its challenge once its signature checks out.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from gateway.app.api.deps import IngressStubDep, SettingsDep
from gateway.app.api.webhooks.receivers import WEBHOOK_CHANNELS, forward, webhook_headers
from gateway.app.schemas.webhooks import WebhookAck

router = APIRouter(prefix="/webhook/slack", tags=["webhooks"])

SLACK = WEBHOOK_CHANNELS["slack"]

_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {
        "model": WebhookAck,
        "description": "Stored, already stored (a Slack retry, or the same message as app_mention and message), "
        'or nothing to do; for url_verification, {"challenge": ...}.',
    },
    400: {"description": "The body is not a JSON object."},
    401: {"description": "Bad, stale or missing Slack signature (also for an unknown instance)."},
    503: {"description": "Storage is down; Slack retries."},
}


@router.post("/{instance_name}", responses=_RESPONSES, response_model=None)
async def slack_events(instance_name: str, request: Request, stub: IngressStubDep, settings: SettingsDep) -> Response:
    """Receive one Slack Events API request for the hub instance named in the URL."""
    body = await request.body()
    status, payload = await forward(stub, settings, SLACK, instance_name, body, webhook_headers(request.scope))
    return Response(content=payload, status_code=status, media_type="application/json")
