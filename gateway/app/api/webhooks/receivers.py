"""The webhook channels the gateway serves, and the one forwarding step they share.

Every channel that posts webhooks has one entry in `WEBHOOK_CHANNELS` (its URL segment, its proto channel, whether
the sender may append an event suffix to the URL); the fast path serves all of them through this table, and the
documented FastAPI routes call the same `forward`. The gateway only checks that the body is a JSON object (so
garbage gets a 400, which channels do not retry, instead of a trip through the mesh) and hands the raw bytes and
headers to ingress, whose channel receiver authenticates and parses them.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson
from omni.common.v1 import channel_pb2
from omni.ingress.v1 import ingress_service_pb2
from starlette.types import Scope

from gateway.app.api.rpc import call
from gateway.app.config import Settings
from gateway.app.mesh import IngressStub

WEBHOOK_PREFIX = "/api/v1/webhook/"


@dataclass(frozen=True)
class WebhookChannel:
    """One channel's webhook endpoint: POST /api/v1/webhook/{segment}/{instance}[/{event suffix}]."""

    segment: str
    channel: channel_pb2.Channel.ValueType
    event_suffix: bool = False
    """Evolution's "webhook by events" mode appends e.g. /messages-upsert to the URL."""


WEBHOOK_CHANNELS: dict[str, WebhookChannel] = {
    "evolution": WebhookChannel("evolution", channel_pb2.CHANNEL_WHATSAPP, event_suffix=True),
    "slack": WebhookChannel("slack", channel_pb2.CHANNEL_SLACK),
}
"""Webhook channels by URL segment (Discord has none: its bots receive their messages themselves)."""

_STATUS = {
    ingress_service_pb2.WEBHOOK_DISPOSITION_ACCEPTED: "accepted",
    ingress_service_pb2.WEBHOOK_DISPOSITION_DUPLICATE: "duplicate",
    ingress_service_pb2.WEBHOOK_DISPOSITION_IGNORED: "ignored",
}


def match_webhook(path: str) -> tuple[WebhookChannel, str] | None:
    """The channel and instance name of a webhook path, or None when the path is not one."""
    if not path.startswith(WEBHOOK_PREFIX):
        return None
    segments = path[len(WEBHOOK_PREFIX) :].split("/")
    channel = WEBHOOK_CHANNELS.get(segments[0])
    if channel is None or not all(segments):
        return None
    if len(segments) == 2 or (len(segments) == 3 and channel.event_suffix):
        return channel, segments[1]
    return None


def webhook_headers(scope: Scope) -> dict[str, str]:
    """Request headers with lower-case names (latin-1, as HTTP carries them). A `?secret=` was already moved into
    the secret header by `gateway.app.edge`, before the request span could record the URL."""
    return {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}


async def forward(
    stub: IngressStub,
    settings: Settings,
    channel: WebhookChannel,
    instance_name: str,
    body: bytes,
    headers: dict[str, str],
) -> tuple[int, bytes]:
    """Hand the raw body to ingress; returns (HTTP status, JSON body).

    Nothing is parsed here: ingress authenticates the request first and only then decodes the body, so a stranger
    gets 401 whatever they send (CONTRACT.md, "Authentication comes before parsing").

    Raises:
        OmniError: ingress refused or failed (mapped to HTTP by the caller).
    """
    answer = await call(
        stub.ReceiveWebhook,
        ingress_service_pb2.ReceiveWebhookRequest(
            instance_name=instance_name, channel=channel.channel, body=body, headers=headers
        ),
        timeout=settings.api_webhook_timeout_seconds,
    )
    ack: dict[str, str | None] = {
        "status": _STATUS.get(answer.disposition, "accepted"),
        "message_id": answer.message_id or None,
        "trace_id": answer.trace_id or None,
    }
    if answer.challenge:
        # Slack's url_verification: the Request URL is accepted when the challenge comes back.
        return 200, orjson.dumps({"challenge": answer.challenge})
    if answer.reason:
        ack["reason"] = answer.reason
    return 200, orjson.dumps(ack)
