"""ChannelsServicer: proto in, domain call, proto out. Errors are raised as domain errors and mapped by the
server's interceptor."""

from __future__ import annotations

import dataclasses

import grpc
from omni.channels.v1 import channels_service_pb2, channels_service_pb2_grpc, outbound_pb2
from omni.common.v1 import message_pb2

from servicekit.convert import CONNECTION_STATE_VALUES, instance_from_proto, media_from_proto, workspaces_to_proto
from servicekit.principals import current_principal
from services.channels.core.models import (
    OutboundPart,
    PartResult,
    PartState,
    SendRequest,
)
from services.channels.core.service import ChannelsCore

Context = grpc.aio.ServicerContext[object, object]

_PART_STATES = {
    PartState.PENDING: outbound_pb2.PART_STATE_PENDING,
    PartState.SENDING: outbound_pb2.PART_STATE_UNKNOWN,
    PartState.SENT: outbound_pb2.PART_STATE_SENT,
    PartState.FAILED: outbound_pb2.PART_STATE_FAILED,
}
_PRESENCES = {
    outbound_pb2.PRESENCE_COMPOSING: "composing",
    outbound_pb2.PRESENCE_RECORDING: "recording",
    outbound_pb2.PRESENCE_PAUSED: "paused",
}


def _part(part: outbound_pb2.OutboundPart) -> OutboundPart:
    media = media_from_proto(part.media) if part.HasField("media") else None
    if media is not None and part.media.type and not media.type:
        media = dataclasses.replace(media, type="unsupported")  # a type this build cannot send: refused below
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
        self, request: channels_service_pb2.SendMessageRequest, context: Context
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
        self, request: channels_service_pb2.SendPresenceRequest, context: Context
    ) -> channels_service_pb2.SendPresenceResponse:
        await self._core.send_presence(
            request.instance_name, request.chat_id, _PRESENCES.get(request.presence, ""), request.duration_ms
        )
        return channels_service_pb2.SendPresenceResponse()

    async def GetConnectionStatus(
        self, request: channels_service_pb2.GetConnectionStatusRequest, context: Context
    ) -> channels_service_pb2.GetConnectionStatusResponse:
        current_principal().require_instance(request.instance_name)
        status = await self._core.get_connection_status(request.instance_name, include_qr_code=request.include_qr_code)
        return channels_service_pb2.GetConnectionStatusResponse(
            state=CONNECTION_STATE_VALUES[status.state.value],
            raw_state=status.raw_state,
            qr_code=status.qr_code,
            pairing_code=status.pairing_code,
            detail=status.detail,
            workspaces=workspaces_to_proto(status.workspaces),
            latency_ms=status.latency_ms,
            account_id=status.account_id,
            account_name=status.account_name,
        )

    async def CheckAccount(
        self, request: channels_service_pb2.CheckAccountRequest, context: Context
    ) -> channels_service_pb2.CheckAccountResponse:
        account = await self._core.check_account(instance_from_proto(request.instance))
        return channels_service_pb2.CheckAccountResponse(
            account_id=account.id,
            account_name=account.name,
            workspace_id=account.workspace_id,
            workspace_name=account.workspace_name,
        )

    async def RegisterWebhook(
        self, request: channels_service_pb2.RegisterWebhookRequest, context: Context
    ) -> channels_service_pb2.RegisterWebhookResponse:
        registered = await self._core.register_webhook(instance_from_proto(request.instance), request.webhook_url)
        return channels_service_pb2.RegisterWebhookResponse(registered=registered)

    async def PurgeInstance(
        self, request: channels_service_pb2.PurgeInstanceRequest, context: Context
    ) -> channels_service_pb2.PurgeInstanceResponse:
        deleted = await self._core.purge_instance(request.instance_name)
        return channels_service_pb2.PurgeInstanceResponse(deleted_rows=deleted)

    async def ListContacts(
        self, request: channels_service_pb2.ListContactsRequest, context: Context
    ) -> channels_service_pb2.ListContactsResponse:
        current_principal().require_instance(request.instance_name)
        contacts, total = await self._core.list_contacts(
            request.instance_name, page=request.page, page_size=request.page_size, search=request.search
        )
        return channels_service_pb2.ListContactsResponse(
            contacts=[
                channels_service_pb2.Contact(
                    id=c.id, name=c.name, phone_number=c.phone_number, avatar_url=c.avatar_url, email=c.email
                )
                for c in contacts
            ],
            total_count=total,
        )

    async def ListChannels(
        self, request: channels_service_pb2.ListChannelsRequest, context: Context
    ) -> channels_service_pb2.ListChannelsResponse:
        current_principal().require_instance(request.instance_name)
        channels = await self._core.list_channels(request.instance_name)
        return channels_service_pb2.ListChannelsResponse(
            channels=[
                channels_service_pb2.ChatChannel(
                    id=c.id,
                    name=c.name,
                    kind=c.kind,
                    workspace=message_pb2.Workspace(id=c.workspace_id, name=c.workspace_name),
                    parent_id=c.parent_id,
                )
                for c in channels
            ]
        )
