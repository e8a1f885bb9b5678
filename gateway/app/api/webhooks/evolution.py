"""POST /api/v1/webhook/evolution/{instance_name}[/{event_suffix}]: Evolution API webhooks, the hot path.

No API key (Evolution cannot send ours; an instance may require its own `webhook_secret`, which ingress checks).
The body is forwarded byte for byte: the only work here is a cheap JSON check so garbage gets a 400 (which
Evolution does not retry) instead of a trip through the mesh. No pydantic model, no re-serialisation.

`forward` is the whole behaviour. In production `fast_path.EvolutionWebhookFastPath` calls it straight from the
ASGI stack; the FastAPI routes below call it too and document the endpoint in the OpenAPI schema.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs

import orjson
from fastapi import APIRouter, Request
from omni.common.v1 import channel_pb2
from omni.ingress.v1 import ingress_service_pb2
from starlette.responses import Response
from starlette.types import Scope

from gateway.app.api.deps import IngressStubDep, SettingsDep
from gateway.app.api.rpc import call
from gateway.app.config import Settings
from gateway.app.mesh import IngressStub
from gateway.app.schemas.webhooks import WebhookAck

router = APIRouter(prefix="/webhook/evolution", tags=["webhooks"])

SECRET_HEADER = "x-omni-webhook-secret"
"""Header carrying an instance's webhook_secret; `?secret=` in the webhook URL is folded into it."""

_STATUS = {
    ingress_service_pb2.WEBHOOK_DISPOSITION_ACCEPTED: "accepted",
    ingress_service_pb2.WEBHOOK_DISPOSITION_DUPLICATE: "duplicate",
    ingress_service_pb2.WEBHOOK_DISPOSITION_IGNORED: "ignored",
}
_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {"model": WebhookAck, "description": "Stored (accepted), already stored (duplicate) or nothing to do."},
    400: {"description": "The body is not a JSON object."},
    404: {"description": "Unknown instance."},
    503: {"description": "Storage is down; Evolution retries."},
}


_TRAILING_EVENT_SUFFIX = re.compile(r"/(?:[a-z]+-)+[a-z]+$|/call$")
"""Evolution's by-events mode appends "/messages-upsert" to the URL string, so with "?secret=s" it lands in the
query value ("s/messages-upsert"); the suffix is cut off again to recover the secret."""


def webhook_headers(scope: Scope) -> dict[str, str]:
    """Request headers with lower-case names (latin-1, as HTTP carries them), plus the ?secret= query value."""
    headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
    query = scope.get("query_string") or b""
    if query and SECRET_HEADER not in headers:
        secret = parse_qs(query.decode("latin-1")).get("secret", [""])[0]
        if secret:
            headers[SECRET_HEADER] = _TRAILING_EVENT_SUFFIX.sub("", secret)
    return headers


async def forward(
    stub: IngressStub, settings: Settings, instance_name: str, body: bytes, headers: dict[str, str]
) -> tuple[int, bytes]:
    """Check the body is a JSON object and hand it to ingress; returns (HTTP status, JSON body).

    Raises:
        OmniError: ingress refused or failed (mapped to HTTP by the caller).
    """
    try:
        is_object = isinstance(orjson.loads(body), dict)
    except orjson.JSONDecodeError:
        is_object = False
    if not is_object:
        return 400, orjson.dumps({"detail": "webhook body must be a JSON object", "reason": "INVALID_JSON"})
    answer = await call(
        stub.ReceiveWebhook,
        ingress_service_pb2.ReceiveWebhookRequest(
            instance_name=instance_name, channel=channel_pb2.CHANNEL_WHATSAPP, body=body, headers=headers
        ),
        timeout=settings.api_webhook_timeout_seconds,
    )
    ack: dict[str, str | None] = {
        "status": _STATUS.get(answer.disposition, "accepted"),
        "message_id": answer.message_id or None,
        "trace_id": answer.trace_id or None,
    }
    if answer.reason:
        ack["reason"] = answer.reason
    return 200, orjson.dumps(ack)


async def _receive(instance_name: str, request: Request, stub: IngressStubDep, settings: Settings) -> Response:
    status, body = await forward(stub, settings, instance_name, await request.body(), webhook_headers(request.scope))
    return Response(content=body, status_code=status, media_type="application/json")


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
