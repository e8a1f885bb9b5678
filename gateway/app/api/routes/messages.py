"""API sends: POST /api/v1/{instance}/send-text and /send-media, backed by RouterService."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header
from omni.common.v1 import channel_pb2, message_pb2
from omni.router.v1 import router_service_pb2

from gateway.app.api.deps import InstanceAccess, RouterStubDep, SettingsDep
from gateway.app.api.rpc import call
from gateway.app.schemas.messages import SendMediaIn, SendOut, SendTextIn

router = APIRouter(tags=["messages"], dependencies=[InstanceAccess])

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=256,
        description="Makes a retried call send once: a repeat with the same key returns the first result.",
    ),
]

_MESSAGE_TYPE = {
    "image": channel_pb2.MESSAGE_TYPE_IMAGE,
    "audio": channel_pb2.MESSAGE_TYPE_AUDIO,
    "video": channel_pb2.MESSAGE_TYPE_VIDEO,
    "document": channel_pb2.MESSAGE_TYPE_DOCUMENT,
    "sticker": channel_pb2.MESSAGE_TYPE_STICKER,
}


@router.post("/{instance}/send-text", response_model=SendOut)
async def send_text(
    instance: str,
    body: SendTextIn,
    stub: RouterStubDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKey = None,
) -> SendOut:
    """Send a text to a recipient; long texts are split like agent replies."""
    answer = await call(
        stub.SendText,
        router_service_pb2.SendTextRequest(
            instance_name=instance,
            recipient=body.recipient,
            text=body.text,
            session_id=body.session_id or "",
            idempotency_key=idempotency_key or "",
        ),
        timeout=settings.api_send_timeout_seconds,
    )
    return SendOut(message_ids=list(answer.message_ids), trace_id=answer.trace_id or None)


@router.post("/{instance}/send-media", response_model=SendOut)
async def send_media(
    instance: str,
    body: SendMediaIn,
    stub: RouterStubDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKey = None,
) -> SendOut:
    """Send a file (by URL or base64) with an optional caption."""
    media = message_pb2.Media(
        type=_MESSAGE_TYPE[body.media_type] if body.media_type else channel_pb2.MESSAGE_TYPE_UNSPECIFIED,
        mime_type=body.mime_type or "",
        url=body.media_url or "",
        base64=body.media_base64 or "",
        caption=body.caption or "",
        filename=body.filename or "",
    )
    answer = await call(
        stub.SendMedia,
        router_service_pb2.SendMediaRequest(
            instance_name=instance,
            recipient=body.recipient,
            media=media,
            session_id=body.session_id or "",
            idempotency_key=idempotency_key or "",
        ),
        timeout=settings.api_send_timeout_seconds,
    )
    return SendOut(message_ids=list(answer.message_ids), trace_id=answer.trace_id or None)
