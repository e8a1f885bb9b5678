"""The unified Omni API reads: GET /api/v1/{instance}/channels, /contacts[/{id}] and /chats[/{id}], each one
ChannelsService call (the channel list adds the instance and its status). Paging happens in channels: the routes
pass page, page_size and filters through and derive `has_more` from the total."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Path, Query
from omni.channels.v1 import channels_service_pb2
from omni.router.v1 import router_service_pb2
from pydantic import AfterValidator

from gateway.app.api.deps import ChannelsStubDep, InstanceAccess, RouterStubDep, SettingsDep
from gateway.app.api.routes.instances import STATUS_BY_STATE
from gateway.app.api.rpc import call
from gateway.app.mappers.instances import channel_name
from gateway.app.mappers.timestamps import to_datetime
from gateway.app.schemas.channels import ChannelList, ChannelOut
from gateway.app.schemas.chats import ChatList, ChatOut, ChatType
from gateway.app.schemas.common import PAGE_MAX, valid_utf8
from gateway.app.schemas.contacts import ContactList, ContactOut

PageNumber = Annotated[int, Query(ge=1, le=PAGE_MAX, description="1-based page.")]
PageSize = Annotated[int, Query(ge=1, le=500, description="Items per page (at most 500).")]
Search = Annotated[
    str,
    Query(max_length=200, description="Case-insensitive; names, phone numbers and ids."),
    AfterValidator(valid_utf8),
]
ItemId = Annotated[
    str,
    Path(min_length=1, max_length=256, description="The id as listed (a JID on WhatsApp)."),
    AfterValidator(valid_utf8),
]

router = APIRouter(tags=["omni"], dependencies=[InstanceAccess])


@router.get("/{instance}/channels", response_model=ChannelList)
async def list_channels(
    instance: str, stub: RouterStubDep, channels: ChannelsStubDep, settings: SettingsDep
) -> ChannelList:
    """The channels the instance's account sees: a Discord bot's guild channels, a Slack app's channels; for
    WhatsApp one item, the account itself. Each with the instance's name, channel type and connection status. 404
    when the instance is unknown."""
    found = await call(
        stub.GetInstance, router_service_pb2.GetInstanceRequest(name=instance), timeout=settings.api_rpc_timeout_seconds
    )
    listed, state = await asyncio.gather(
        call(
            channels.ListChannels,
            channels_service_pb2.ListChannelsRequest(instance_name=instance),
            timeout=settings.api_channel_timeout_seconds,
        ),
        call(
            channels.GetConnectionStatus,
            channels_service_pb2.GetConnectionStatusRequest(instance_name=instance),
            timeout=settings.api_channel_timeout_seconds,
        ),
    )
    channel_type = channel_name(found.instance.channel)
    status = STATUS_BY_STATE.get(state.state, "error")
    return ChannelList(
        channels=[
            ChannelOut(
                instance_name=instance,
                channel_type=channel_type,
                status=status,
                id=c.id,
                name=c.name,
                kind=c.kind,
                guild_id=c.workspace.id or None,
                guild_name=c.workspace.name or None,
                parent_id=c.parent_id or None,
            )
            for c in listed.channels
        ]
    )


def _contact(c: channels_service_pb2.Contact) -> ContactOut:
    return ContactOut(
        id=c.id,
        name=c.name,
        phone_number=c.phone_number or None,
        avatar_url=c.avatar_url or None,
        email=c.email or None,
    )


def _chat(c: channels_service_pb2.Chat) -> ChatOut:
    return ChatOut(
        id=c.id,
        name=c.name,
        chat_type=c.chat_type if c.chat_type in ("group", "channel") else "direct",
        unread_count=c.unread_count,
        last_message_at=to_datetime(c.last_message_at),
        avatar_url=c.avatar_url or None,
        last_message_text=c.last_message_text or None,
    )


@router.get("/{instance}/contacts", response_model=ContactList)
async def list_contacts(
    instance: str,
    channels: ChannelsStubDep,
    settings: SettingsDep,
    page: PageNumber = 1,
    page_size: PageSize = 50,
    search: Search = "",
) -> ContactList:
    """The people the instance's account can message: a WhatsApp address book (oldest first, so paging while it
    grows skips nothing; groups are at /chats), a Slack workspace's users (by name). `search` matches names, phone
    numbers, ids and emails. 404 when the instance is unknown, 409 for a channel without a contact list, 502 when
    the channel gateway fails."""
    answer = await call(
        channels.ListContacts,
        channels_service_pb2.ListContactsRequest(instance_name=instance, page=page, page_size=page_size, search=search),
        timeout=settings.api_channel_timeout_seconds,
    )
    return ContactList(
        contacts=[_contact(c) for c in answer.contacts],
        page=page,
        page_size=page_size,
        total_count=answer.total_count,
        has_more=page * page_size < answer.total_count,
    )


@router.get("/{instance}/contacts/{contact_id}", response_model=ContactOut)
async def get_contact(
    instance: str, contact_id: ItemId, channels: ChannelsStubDep, settings: SettingsDep
) -> ContactOut:
    """One contact by the list's id (a phone number works too on WhatsApp), read fresh from the channel. 404 when
    the instance or the contact is unknown (reason CONTACT_NOT_FOUND)."""
    answer = await call(
        channels.GetContact,
        channels_service_pb2.GetContactRequest(instance_name=instance, id=contact_id),
        timeout=settings.api_channel_timeout_seconds,
    )
    return _contact(answer.contact)


@router.get("/{instance}/chats", response_model=ChatList)
async def list_chats(
    instance: str,
    channels: ChannelsStubDep,
    settings: SettingsDep,
    page: PageNumber = 1,
    page_size: PageSize = 50,
    search: Annotated[
        str, Query(max_length=200, description="Case-insensitive; chat names and ids."), AfterValidator(valid_utf8)
    ] = "",
    chat_type: Annotated[ChatType | None, Query(description="Keep one type: direct, group or channel.")] = None,
) -> ChatList:
    """The account's conversations (WhatsApp chats, groups and channels), in the order they were created, so new
    chats land on the last page. 404 when the instance is unknown, 409 for a channel without chats (Discord and
    Slack list their channels at /channels), 502 when the channel gateway fails."""
    answer = await call(
        channels.ListChats,
        channels_service_pb2.ListChatsRequest(
            instance_name=instance, page=page, page_size=page_size, search=search, chat_type=chat_type or ""
        ),
        timeout=settings.api_channel_timeout_seconds,
    )
    return ChatList(
        chats=[_chat(c) for c in answer.chats],
        page=page,
        page_size=page_size,
        total_count=answer.total_count,
        has_more=page * page_size < answer.total_count,
    )


@router.get("/{instance}/chats/{chat_id}", response_model=ChatOut)
async def get_chat(instance: str, chat_id: ItemId, channels: ChannelsStubDep, settings: SettingsDep) -> ChatOut:
    """One chat by the list's id, read fresh from the channel. 404 when the instance or the chat is unknown (reason
    CHAT_NOT_FOUND), 409 for a channel without chats."""
    answer = await call(
        channels.GetChat,
        channels_service_pb2.GetChatRequest(instance_name=instance, id=chat_id),
        timeout=settings.api_channel_timeout_seconds,
    )
    return _chat(answer.chat)
