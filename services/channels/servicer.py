"""ChannelsServicer: proto in, domain call, proto out. Errors are raised as domain errors and mapped by the
server's interceptor."""

from __future__ import annotations

import grpc
from omni.channels.v1 import channels_service_pb2, channels_service_pb2_grpc, outbound_pb2
from omni.common.v1 import channel_pb2, message_pb2

from services.channels.core.models import (
    ConnectionState,
    MediaSpec,
    OutboundPart,
    PartResult,
    PartState,
    SendRequest,
)
from services.channels.core.service import ChannelsCore

_PART_STATES = {
    PartState.PENDING: outbound_pb2.PART_STATE_PENDING,
    PartState.SENDING: outbound_pb2.PART_STATE_UNKNOWN,
    PartState.SENT: outbound_pb2.PART_STATE_SENT,
    PartState.FAILED: outbound_pb2.PART_STATE_FAILED,
}
_CONNECTION_STATES = {
    ConnectionState.CONNECTED: outbound_pb2.CONNECTION_STATE_CONNECTED,
    ConnectionState.CONNECTING: outbound_pb2.CONNECTION_STATE_CONNECTING,
    ConnectionState.DISCONNECTED: outbound_pb2.CONNECTION_STATE_DISCONNECTED,
    ConnectionState.ERROR: outbound_pb2.CONNECTION_STATE_ERROR,
}
_PRESENCES = {
    outbound_pb2.PRESENCE_COMPOSING: "composing",
    outbound_pb2.PRESENCE_RECORDING: "recording",
    outbound_pb2.PRESENCE_PAUSED: "paused",
}
_MEDIA_KINDS = {
    channel_pb2.MESSAGE_TYPE_IMAGE: "image",
    channel_pb2.MESSAGE_TYPE_VIDEO: "video",
    channel_pb2.MESSAGE_TYPE_AUDIO: "audio",
    channel_pb2.MESSAGE_TYPE_DOCUMENT: "document",
    channel_pb2.MESSAGE_TYPE_STICKER: "sticker",
    channel_pb2.MESSAGE_TYPE_UNSPECIFIED: "",
}


def _media(media: message_pb2.Media) -> MediaSpec:
    return MediaSpec(
        kind=_MEDIA_KINDS.get(media.type, "unsupported"),
        mime_type=media.mime_type,
        url=media.url,
        base64=media.base64,
        filename=media.filename,
    )


def _part(part: outbound_pb2.OutboundPart) -> OutboundPart:
    media = _media(part.media) if part.HasField("media") else None
    text = part.text or (part.media.caption if media is not None else "")
    return OutboundPart(text=text, media=media)


def _result(result: PartResult) -> outbound_pb2.PartResult:
    return outbound_pb2.PartResult(
        index=result.index,
        state=_PART_STATES[result.state],
        channel_message_id=result.channel_message_id,
        error_message=result.error,
    )


class ChannelsServicer(channels_service_pb2_grpc.ChannelsServiceServicer):
    """The ChannelsService RPCs, delegated to `ChannelsCore`."""

    def __init__(self, core: ChannelsCore) -> None:
        self._core = core

    async def SendMessage(
        self, request: channels_service_pb2.SendMessageRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> channels_service_pb2.SendMessageResponse:
        results = await self._core.send_message(
            SendRequest(
                instance_name=request.instance_name,
                chat_id=request.chat_id,
                idempotency_key=request.idempotency_key,
                parts=[_part(p) for p in request.parts],
                quoted_message_id=request.quoted_message_id,
                thread_id=request.thread_id,
            )
        )
        return channels_service_pb2.SendMessageResponse(results=[_result(r) for r in results])

    async def SendPresence(
        self, request: channels_service_pb2.SendPresenceRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> channels_service_pb2.SendPresenceResponse:
        await self._core.send_presence(
            request.instance_name, request.chat_id, _PRESENCES.get(request.presence, ""), request.duration_ms
        )
        return channels_service_pb2.SendPresenceResponse()

    async def GetConnectionStatus(
        self,
        request: channels_service_pb2.GetConnectionStatusRequest,
        context: grpc.aio.ServicerContext[object, object],
    ) -> channels_service_pb2.GetConnectionStatusResponse:
        status = await self._core.get_connection_status(request.instance_name, include_qr_code=request.include_qr_code)
        return channels_service_pb2.GetConnectionStatusResponse(
            state=_CONNECTION_STATES[status.state],
            raw_state=status.raw_state,
            qr_code=status.qr_code,
            pairing_code=status.pairing_code,
            detail=status.detail,
        )
