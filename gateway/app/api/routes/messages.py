"""API sends: POST /api/v1/{instance}/send-text, send-media, send-audio, send-sticker, send-reaction, send-location,
send-contact, and the chat actions send-presence and fetch-profile, each one RouterService call.

Every send answers `{"status": "sent", "message_ids", "trace_id"}` once the channel accepted it, and takes an
`Idempotency-Key`; the channel's refusals come back with its reason (see `api.errors`: 422 for a recipient not on
WhatsApp or a request the channel's validation refused, 502 for a channel failure, 504 when it did not answer).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header
from omni.common.v1 import channel_pb2, message_pb2
from omni.router.v1 import router_service_pb2

from gateway.app.api.deps import InstanceAccess, RouterStubDep, SettingsDep
from gateway.app.api.rpc import call
from gateway.app.schemas.messages import (
    FetchProfileIn,
    PresenceOut,
    ProfileOut,
    SendAudioIn,
    SendContactIn,
    SendLocationIn,
    SendMediaIn,
    SendOut,
    SendPresenceIn,
    SendReactionIn,
    SendStickerIn,
    SendTextIn,
)

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


async def _send_file(
    stub: RouterStubDep,
    settings: SettingsDep,
    instance: str,
    recipient: str,
    media: message_pb2.Media,
    *,
    session_id: str,
    idempotency_key: str,
) -> SendOut:
    """SendMedia of a file built by a route (a voice note, a sticker)."""
    answer = await call(
        stub.SendMedia,
        router_service_pb2.SendMediaRequest(
            instance_name=instance,
            recipient=recipient,
            media=media,
            session_id=session_id,
            idempotency_key=idempotency_key,
        ),
        timeout=settings.api_send_timeout_seconds,
    )
    return SendOut(message_ids=list(answer.message_ids), trace_id=answer.trace_id or None)


@router.post("/{instance}/send-audio", response_model=SendOut)
async def send_audio(
    instance: str,
    body: SendAudioIn,
    stub: RouterStubDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKey = None,
) -> SendOut:
    """Send a voice note (by URL or base64): WhatsApp shows it as recorded, not as an audio file."""
    media = message_pb2.Media(
        type=channel_pb2.MESSAGE_TYPE_AUDIO,
        mime_type=body.mime_type or "",
        url=body.audio_url or "",
        base64=body.audio_base64 or "",
        voice_note=True,
    )
    return await _send_file(
        stub,
        settings,
        instance,
        body.recipient,
        media,
        session_id=body.session_id or "",
        idempotency_key=idempotency_key or "",
    )


@router.post("/{instance}/send-sticker", response_model=SendOut)
async def send_sticker(
    instance: str,
    body: SendStickerIn,
    stub: RouterStubDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKey = None,
) -> SendOut:
    """Send an image (by URL or base64) as a sticker."""
    media = message_pb2.Media(
        type=channel_pb2.MESSAGE_TYPE_STICKER,
        mime_type=body.mime_type or "",
        url=body.sticker_url or "",
        base64=body.sticker_base64 or "",
    )
    return await _send_file(
        stub,
        settings,
        instance,
        body.recipient,
        media,
        session_id=body.session_id or "",
        idempotency_key=idempotency_key or "",
    )


@router.post("/{instance}/send-reaction", response_model=SendOut)
async def send_reaction(
    instance: str,
    body: SendReactionIn,
    stub: RouterStubDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKey = None,
) -> SendOut:
    """React to a message of the chat with an emoji; an empty `reaction` removes the earlier one."""
    answer = await call(
        stub.SendReaction,
        router_service_pb2.SendReactionRequest(
            instance_name=instance,
            recipient=body.recipient,
            reaction=message_pb2.Reaction(message_id=body.message_id, emoji=body.reaction, from_me=body.from_me),
            session_id=body.session_id or "",
            idempotency_key=idempotency_key or "",
        ),
        timeout=settings.api_send_timeout_seconds,
    )
    return SendOut(message_ids=list(answer.message_ids), trace_id=answer.trace_id or None)


@router.post("/{instance}/send-location", response_model=SendOut)
async def send_location(
    instance: str,
    body: SendLocationIn,
    stub: RouterStubDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKey = None,
) -> SendOut:
    """Send a map pin, with an optional place name and address."""
    answer = await call(
        stub.SendLocation,
        router_service_pb2.SendLocationRequest(
            instance_name=instance,
            recipient=body.recipient,
            location=message_pb2.Location(
                latitude=body.latitude, longitude=body.longitude, name=body.name or "", address=body.address or ""
            ),
            session_id=body.session_id or "",
            idempotency_key=idempotency_key or "",
        ),
        timeout=settings.api_send_timeout_seconds,
    )
    return SendOut(message_ids=list(answer.message_ids), trace_id=answer.trace_id or None)


@router.post("/{instance}/send-contact", response_model=SendOut)
async def send_contact(
    instance: str,
    body: SendContactIn,
    stub: RouterStubDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKey = None,
) -> SendOut:
    """Send one or more contact cards as one message."""
    cards = [
        message_pb2.ContactCard(
            full_name=card.full_name,
            phone_number=card.phone_number,
            email=card.email or "",
            organization=card.organization or "",
        )
        for card in body.contacts
    ]
    answer = await call(
        stub.SendContact,
        router_service_pb2.SendContactRequest(
            instance_name=instance,
            recipient=body.recipient,
            contacts=cards,
            session_id=body.session_id or "",
            idempotency_key=idempotency_key or "",
        ),
        timeout=settings.api_send_timeout_seconds,
    )
    return SendOut(message_ids=list(answer.message_ids), trace_id=answer.trace_id or None)


@router.post("/{instance}/send-presence", response_model=PresenceOut)
async def send_presence(instance: str, body: SendPresenceIn, stub: RouterStubDep, settings: SettingsDep) -> PresenceOut:
    """Show typing, recording, paused or available in the chat; the call lasts `duration_ms` (WhatsApp's way)."""
    await call(
        stub.SendPresence,
        router_service_pb2.SendPresenceRequest(
            instance_name=instance,
            recipient=body.recipient,
            presence=body.presence,
            duration_ms=body.duration_ms or 0,
        ),
        timeout=settings.api_send_timeout_seconds,
    )
    return PresenceOut()


@router.post("/{instance}/fetch-profile", response_model=ProfileOut)
async def fetch_profile(instance: str, body: FetchProfileIn, stub: RouterStubDep, settings: SettingsDep) -> ProfileOut:
    """A person's public profile on the channel: name, about text, picture, business details."""
    answer = await call(
        stub.FetchProfile,
        router_service_pb2.FetchProfileRequest(instance_name=instance, recipient=body.recipient),
        timeout=settings.api_send_timeout_seconds,
    )
    profile = answer.profile
    return ProfileOut(
        id=profile.id,
        name=profile.name or None,
        phone_number=profile.phone_number or None,
        status=profile.status or None,
        picture_url=profile.picture_url or None,
        is_business=profile.is_business,
        description=profile.description or None,
    )
