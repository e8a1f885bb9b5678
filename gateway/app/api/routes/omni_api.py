"""The unified Omni API reads: GET /api/v1/{instance}/channels, backed by ChannelsService."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from omni.channels.v1 import channels_service_pb2
from omni.router.v1 import router_service_pb2

from gateway.app.api.deps import ChannelsStubDep, InstanceAccess, RouterStubDep, SettingsDep
from gateway.app.api.routes.instances import STATUS_BY_STATE
from gateway.app.api.rpc import call
from gateway.app.mappers.instances import channel_name
from gateway.app.schemas.channels import ChannelList, ChannelOut

router = APIRouter(tags=["omni"], dependencies=[InstanceAccess])


@router.get("/{instance}/channels", response_model=ChannelList)
async def list_channels(
    instance: str, stub: RouterStubDep, channels: ChannelsStubDep, settings: SettingsDep
) -> ChannelList:
    """The channels the instance's account sees: a Discord bot's guild channels (empty for WhatsApp). 404 when the
    instance is unknown."""
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
