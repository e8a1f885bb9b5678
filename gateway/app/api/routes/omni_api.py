"""The unified Omni API reads: GET /api/v1/{instance}/channels and /contacts, backed by ChannelsService."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query
from omni.channels.v1 import channels_service_pb2
from omni.router.v1 import router_service_pb2

from gateway.app.api.deps import ChannelsStubDep, InstanceAccess, RouterStubDep, SettingsDep
from gateway.app.api.routes.instances import STATUS_BY_STATE
from gateway.app.api.rpc import call
from gateway.app.mappers.instances import channel_name
from gateway.app.schemas.channels import ChannelList, ChannelOut
from gateway.app.schemas.common import PAGE_MAX
from gateway.app.schemas.contacts import ContactList, ContactOut

router = APIRouter(tags=["omni"], dependencies=[InstanceAccess])


@router.get("/{instance}/channels", response_model=ChannelList)
async def list_channels(
    instance: str, stub: RouterStubDep, channels: ChannelsStubDep, settings: SettingsDep
) -> ChannelList:
    """The channels the instance's account sees: a Discord bot's guild channels, a Slack app's channels (empty for
    WhatsApp). 404 when the instance is unknown."""
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


@router.get("/{instance}/contacts", response_model=ContactList)
async def list_contacts(
    instance: str,
    channels: ChannelsStubDep,
    settings: SettingsDep,
    page: Annotated[int, Query(ge=1, le=PAGE_MAX)] = 1,
    page_size: Annotated[int, Query(ge=1, le=500)] = 50,
    search: Annotated[str, Query(max_length=200)] = "",
) -> ContactList:
    """The people the instance's account can message (a Slack workspace's users), by name; `search` matches names
    and emails. 404 when the instance is unknown, 409 for a channel whose contacts are not listed yet."""
    answer = await call(
        channels.ListContacts,
        channels_service_pb2.ListContactsRequest(instance_name=instance, page=page, page_size=page_size, search=search),
        timeout=settings.api_channel_timeout_seconds,
    )
    return ContactList(
        contacts=[
            ContactOut(
                id=c.id,
                name=c.name,
                phone_number=c.phone_number or None,
                avatar_url=c.avatar_url or None,
                email=c.email or None,
            )
            for c in answer.contacts
        ],
        page=page,
        page_size=page_size,
        total_count=answer.total_count,
        has_more=page * page_size < answer.total_count,
    )
