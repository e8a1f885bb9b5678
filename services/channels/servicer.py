"""ChannelsServicer: proto in, domain call, proto out. Errors are raised as domain errors and mapped by the
server's interceptor."""

from __future__ import annotations

import dataclasses

import grpc
from omni.channels.v1 import channels_service_pb2, channels_service_pb2_grpc, outbound_pb2
from omni.common.v1 import message_pb2

from servicekit.convert import (
    CONNECTION_STATE_VALUES,
    CONNECTION_STATES,
    contact_card_from_proto,
    instance_from_proto,
    location_from_proto,
    media_from_proto,
    profile_to_proto,
    reaction_from_proto,
    seconds,
    timestamp,
    workspaces_to_proto,
)
from servicekit.errors import FieldViolation, InvalidArgumentError
from servicekit.principals import current_principal
from services.channels.core.connections import ConnectionAction, ConnectionEvent
from services.channels.core.models import (
    ConnectionState,
    ConnectionStatus,
    OutboundPart,
    PartResult,
    PartState,
    SendRequest,
)
from services.channels.core.senders.base import Chat, Contact
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
    outbound_pb2.PRESENCE_AVAILABLE: "available",
}


def _part(part: outbound_pb2.OutboundPart) -> OutboundPart:
    media = media_from_proto(part.media) if part.HasField("media") else None
    if media is not None and part.media.type and not media.type:
        media = dataclasses.replace(media, type="unsupported")  # a type this build cannot send: refused below
    text = part.text or (part.media.caption if media is not None else "")
    return OutboundPart(
        text=text,
        media=media,
        reaction=reaction_from_proto(part.reaction) if part.HasField("reaction") else None,
        location=location_from_proto(part.location) if part.HasField("location") else None,
        contacts=tuple(contact_card_from_proto(card) for card in part.contacts),
    )


def _result(result: PartResult) -> outbound_pb2.PartResult:
    return outbound_pb2.PartResult(
        index=result.index,
        state=_PART_STATES[result.state],
        channel_message_id=result.channel_message_id,
        error_message=result.error,
    )


def _contact(contact: Contact) -> channels_service_pb2.Contact:
    return channels_service_pb2.Contact(
        id=contact.id,
        name=contact.name,
        phone_number=contact.phone_number,
        avatar_url=contact.avatar_url,
        email=contact.email,
    )


def _chat(chat: Chat) -> channels_service_pb2.Chat:
    proto = channels_service_pb2.Chat(
        id=chat.id,
        name=chat.name,
        chat_type=chat.chat_type,
        unread_count=chat.unread_count,
        avatar_url=chat.avatar_url,
        last_message_text=chat.last_message_text,
    )
    if chat.last_message_at is not None:
        proto.last_message_at.CopyFrom(timestamp(chat.last_message_at))
    return proto


_CONNECTION_ACTIONS = {
    channels_service_pb2.CONNECTION_ACTION_CONNECT: ConnectionAction.CONNECT,
    channels_service_pb2.CONNECTION_ACTION_RESTART: ConnectionAction.RESTART,
    channels_service_pb2.CONNECTION_ACTION_LOGOUT: ConnectionAction.LOGOUT,
    channels_service_pb2.CONNECTION_ACTION_DISCONNECT: ConnectionAction.DISCONNECT,
}


def _status_to_proto(status: ConnectionStatus) -> channels_service_pb2.GetConnectionStatusResponse:
    return channels_service_pb2.GetConnectionStatusResponse(
        state=CONNECTION_STATE_VALUES[status.state.value],
        raw_state=status.raw_state,
        qr_code=status.qr_code,
        pairing_code=status.pairing_code,
        detail=status.detail,
        account_id=status.account_id,
        account_name=status.account_name,
    )


def _event_from_proto(request: channels_service_pb2.RecordConnectionEventRequest) -> ConnectionEvent:
    state = CONNECTION_STATES.get(request.state)
    return ConnectionEvent(
        state=ConnectionState(state) if state else None,
        raw_state=request.raw_state,
        qr_code=request.qr_code,
        pairing_code=request.pairing_code,
        detail=request.detail,
        account_id=request.account_id,
        account_name=request.account_name,
        occurred_at=seconds(request.occurred_at) if request.HasField("occurred_at") else 0.0,
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

    async def FetchProfile(
        self, request: channels_service_pb2.FetchProfileRequest, context: Context
    ) -> channels_service_pb2.FetchProfileResponse:
        current_principal().require_instance(request.instance_name)
        profile = await self._core.fetch_profile(request.instance_name, request.chat_id)
        return channels_service_pb2.FetchProfileResponse(profile=profile_to_proto(profile))

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

    async def ProvisionInstance(
        self, request: channels_service_pb2.ProvisionInstanceRequest, context: Context
    ) -> channels_service_pb2.ProvisionInstanceResponse:
        done = await self._core.connections.provision(instance_from_proto(request.instance), request.webhook_url)
        return channels_service_pb2.ProvisionInstanceResponse(
            provisioned=done.provisioned,
            created=done.created,
            instance_token=done.instance_token,
            remote_id=done.remote_id,
            qr_code=done.qr_code,
            pairing_code=done.pairing_code,
        )

    async def DeleteRemoteInstance(
        self, request: channels_service_pb2.DeleteRemoteInstanceRequest, context: Context
    ) -> channels_service_pb2.DeleteRemoteInstanceResponse:
        deleted = await self._core.connections.delete_remote(request.instance_name)
        return channels_service_pb2.DeleteRemoteInstanceResponse(deleted=deleted)

    async def ManageConnection(
        self, request: channels_service_pb2.ManageConnectionRequest, context: Context
    ) -> channels_service_pb2.ManageConnectionResponse:
        current_principal().require_instance(request.instance_name)
        action = _CONNECTION_ACTIONS.get(request.action)
        if action is None:
            raise InvalidArgumentError(
                "action is required",
                violations=[FieldViolation("action", "connect, restart, logout or disconnect")],
            )
        result = await self._core.connections.act(request.instance_name, action, request.phone_number)
        return channels_service_pb2.ManageConnectionResponse(
            status=_status_to_proto(result.status), message=result.message
        )

    async def DiscoverInstances(
        self, request: channels_service_pb2.DiscoverInstancesRequest, context: Context
    ) -> channels_service_pb2.DiscoverInstancesResponse:
        current_principal().require_admin()
        found = await self._core.connections.discover(request.evolution_url, request.evolution_key)
        return channels_service_pb2.DiscoverInstancesResponse(
            instances=[
                channels_service_pb2.RemoteInstance(
                    name=item.name,
                    evolution_url=item.server_url,
                    state=CONNECTION_STATE_VALUES[item.state.value],
                    raw_state=item.raw_state,
                    owner_jid=item.owner_jid,
                    profile_name=item.profile_name,
                    remote_id=item.remote_id,
                )
                for item in found
            ]
        )

    async def RecordConnectionEvent(
        self, request: channels_service_pb2.RecordConnectionEventRequest, context: Context
    ) -> channels_service_pb2.RecordConnectionEventResponse:
        await self._core.connections.record(request.instance_name, _event_from_proto(request))
        return channels_service_pb2.RecordConnectionEventResponse()

    async def CountConnections(
        self, request: channels_service_pb2.CountConnectionsRequest, context: Context
    ) -> channels_service_pb2.CountConnectionsResponse:
        # Mesh only: the gateway's /health shows the counts, never which instance is in which state.
        return channels_service_pb2.CountConnectionsResponse(counts=await self._core.connections.book.counts())

    async def FetchMedia(
        self, request: channels_service_pb2.FetchMediaRequest, context: Context
    ) -> channels_service_pb2.FetchMediaResponse:
        # Mesh only (not a public RPC): the router downloads a file of the message it is routing.
        fetched = await self._core.fetch_media(
            request.instance_name, request.channel_message_id, request.chat_id, request.max_bytes
        )
        return channels_service_pb2.FetchMediaResponse(
            data=fetched.data, mime_type=fetched.mime_type, filename=fetched.filename
        )

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
        return channels_service_pb2.ListContactsResponse(contacts=[_contact(c) for c in contacts], total_count=total)

    async def GetContact(
        self, request: channels_service_pb2.GetContactRequest, context: Context
    ) -> channels_service_pb2.GetContactResponse:
        current_principal().require_instance(request.instance_name)
        contact = await self._core.get_contact(request.instance_name, request.id)
        return channels_service_pb2.GetContactResponse(contact=_contact(contact))

    async def ListChats(
        self, request: channels_service_pb2.ListChatsRequest, context: Context
    ) -> channels_service_pb2.ListChatsResponse:
        current_principal().require_instance(request.instance_name)
        chats, total = await self._core.list_chats(
            request.instance_name,
            page=request.page,
            page_size=request.page_size,
            search=request.search,
            chat_type=request.chat_type,
        )
        return channels_service_pb2.ListChatsResponse(chats=[_chat(c) for c in chats], total_count=total)

    async def GetChat(
        self, request: channels_service_pb2.GetChatRequest, context: Context
    ) -> channels_service_pb2.GetChatResponse:
        current_principal().require_instance(request.instance_name)
        chat = await self._core.get_chat(request.instance_name, request.id)
        return channels_service_pb2.GetChatResponse(chat=_chat(chat))

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
