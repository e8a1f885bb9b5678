"""Instance CRUD and connection state: /api/v1/instances, backed by RouterService and ChannelsService."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from omni.channels.v1 import channels_service_pb2
from omni.common.v1 import channel_pb2
from omni.router.v1 import router_service_pb2

from gateway.app.api.deps import AdminOnly, ChannelsStubDep, InstanceAccess, RouterStubDep, SettingsDep
from gateway.app.api.rpc import call
from gateway.app.config import Settings
from gateway.app.mappers.instances import (
    CHANNEL_BY_NAME,
    channel_name,
    create_to_proto,
    instance_out,
    update_to_proto,
)
from gateway.app.schemas.common import PAGE_MAX, HttpUrl, SecretText
from gateway.app.schemas.instances import (
    ChannelType,
    ConnectIn,
    ConnectionActionOut,
    ConnectionStatus,
    ConnectionStatusOut,
    DiscoveredInstanceOut,
    DiscoverOut,
    InstanceCreate,
    InstanceList,
    InstanceOut,
    InstanceUpdate,
    QrCodeOut,
    WorkspaceOut,
)
from servicekit.errors import FieldViolation, InvalidArgumentError

router = APIRouter(prefix="/instances", tags=["instances"])

STATUS_BY_STATE: dict[int, ConnectionStatus] = {
    channel_pb2.CONNECTION_STATE_CONNECTED: "connected",
    channel_pb2.CONNECTION_STATE_CONNECTING: "connecting",
    channel_pb2.CONNECTION_STATE_DISCONNECTED: "disconnected",
    channel_pb2.CONNECTION_STATE_ERROR: "error",
}


def _status_fields(
    name: str, channel_type: str, state: channels_service_pb2.GetConnectionStatusResponse
) -> dict[str, Any]:
    """The fields every connection answer shares; a bot's account, guilds and latency when the channel has them."""
    status = STATUS_BY_STATE.get(state.state, "error")
    return {
        "instance_name": name,
        "channel_type": channel_type,
        "status": status,
        "raw_state": state.raw_state or None,
        "detail": state.detail or None,
        "error_message": (state.detail or None) if status == "error" else None,
        "account_id": state.account_id or None,
        "account_name": state.account_name or None,
        "guilds": [WorkspaceOut(id=w.id, name=w.name) for w in state.workspaces] if state.account_id else None,
        "latency_ms": state.latency_ms if state.account_id else None,
    }


def public_base_url(request: Request, settings: Settings) -> str:
    """Where the outside world reaches this gateway: the configured public URL, else the request's own base."""
    return settings.api_public_url or str(request.base_url)


@router.post("", status_code=201, response_model=InstanceOut, dependencies=[AdminOnly])
async def create_instance(
    body: InstanceCreate, stub: RouterStubDep, settings: SettingsDep, request: Request
) -> InstanceOut:
    """Create an instance. 409 when the name is taken."""
    answer = await call(
        stub.CreateInstance,
        router_service_pb2.CreateInstanceRequest(instance=create_to_proto(body)),
        timeout=settings.api_rpc_timeout_seconds,
    )
    created = instance_out(answer.instance, public_base_url(request, settings))
    # The one time the secrets are shown: the operator configures the channel and the agent with them now.
    return created.model_copy(
        update={
            "webhook_secret": answer.webhook_secret or None,
            "agent_signing_secret": answer.agent_signing_secret or None,
        }
    )


@router.get("", response_model=InstanceList, dependencies=[AdminOnly])
async def list_instances(
    stub: RouterStubDep,
    settings: SettingsDep,
    request: Request,
    page: Annotated[int, Query(ge=1, le=PAGE_MAX)] = 1,
    page_size: Annotated[int, Query(ge=1, le=500)] = 100,
    channel_type: ChannelType | None = None,
) -> InstanceList:
    """One page of instances ordered by name."""
    answer = await call(
        stub.ListInstances,
        router_service_pb2.ListInstancesRequest(
            page=page,
            page_size=page_size,
            channel=CHANNEL_BY_NAME[channel_type] if channel_type else channel_pb2.CHANNEL_UNSPECIFIED,
        ),
        timeout=settings.api_rpc_timeout_seconds,
    )
    base_url = public_base_url(request, settings)
    return InstanceList(
        instances=[instance_out(instance, base_url) for instance in answer.instances],
        page=page,
        page_size=page_size,
        total_count=answer.total_count,
    )


@router.get("/discover", response_model=DiscoverOut, dependencies=[AdminOnly])
async def discover_instances(
    channels: ChannelsStubDep,
    settings: SettingsDep,
    evolution_url: Annotated[HttpUrl | None, Query(description="An Evolution server to list (default: all).")] = None,
    evolution_key: Annotated[SecretText | None, Query(description="Its global API key.")] = None,
) -> DiscoverOut:
    """Evolution instances no Omni instance manages yet: on the given server, or on every server Omni's instances use
    (with their keys) plus the deployment's EVOLUTION_API_URL. Declared before /{name} so "discover" is not read as
    an instance name."""
    if evolution_key and not evolution_url:
        raise InvalidArgumentError(
            "evolution_key needs evolution_url",
            violations=[FieldViolation("evolution_url", "required with evolution_key")],
        )
    answer = await call(
        channels.DiscoverInstances,
        channels_service_pb2.DiscoverInstancesRequest(
            evolution_url=evolution_url or "", evolution_key=evolution_key or ""
        ),
        timeout=settings.api_channel_timeout_seconds,
    )
    return DiscoverOut(
        instances=[
            DiscoveredInstanceOut(
                name=item.name,
                evolution_url=item.evolution_url,
                status=STATUS_BY_STATE.get(item.state, "error"),
                raw_state=item.raw_state or None,
                owner_jid=item.owner_jid or None,
                profile_name=item.profile_name or None,
                remote_id=item.remote_id or None,
            )
            for item in answer.instances
        ]
    )


@router.get("/{name}", response_model=InstanceOut, dependencies=[InstanceAccess])
async def get_instance(name: str, stub: RouterStubDep, settings: SettingsDep, request: Request) -> InstanceOut:
    """One instance, secrets masked. 404 when unknown."""
    answer = await call(
        stub.GetInstance, router_service_pb2.GetInstanceRequest(name=name), timeout=settings.api_rpc_timeout_seconds
    )
    return instance_out(answer.instance, public_base_url(request, settings))


@router.put("/{name}", response_model=InstanceOut, dependencies=[AdminOnly])
async def update_instance(
    name: str, body: InstanceUpdate, stub: RouterStubDep, settings: SettingsDep, request: Request
) -> InstanceOut:
    """Change the fields present in the body (null clears an optional field or a secret)."""
    if body.name is not None and body.name != name:
        raise InvalidArgumentError(
            "instances cannot be renamed",
            reason="RENAME_NOT_SUPPORTED",
            violations=[FieldViolation("name", f"must be '{name}' (the name in the path) or absent")],
        )
    instance, mask = update_to_proto(name, body)
    if not mask.paths:
        return await get_instance(name, stub, settings, request)
    answer = await call(
        stub.UpdateInstance,
        router_service_pb2.UpdateInstanceRequest(instance=instance, update_mask=mask),
        timeout=settings.api_rpc_timeout_seconds,
    )
    return instance_out(answer.instance, public_base_url(request, settings))


@router.delete("/{name}", status_code=204, response_class=Response, dependencies=[AdminOnly])
async def delete_instance(
    name: str,
    stub: RouterStubDep,
    settings: SettingsDep,
    delete_remote: Annotated[
        bool,
        Query(
            description="Also delete the Evolution instance (default: keep it). 502 and nothing deleted when "
            "Evolution refuses."
        ),
    ] = False,
) -> Response:
    """Delete an instance with its users and sessions. 404 when unknown."""
    await call(
        stub.DeleteInstance,
        router_service_pb2.DeleteInstanceRequest(name=name, delete_remote=delete_remote),
        timeout=settings.api_channel_timeout_seconds if delete_remote else settings.api_rpc_timeout_seconds,
    )
    return Response(status_code=204)


async def _connection(
    name: str, include_qr_code: bool, stub: RouterStubDep, channels: ChannelsStubDep, settings: Settings
) -> tuple[str, channels_service_pb2.GetConnectionStatusResponse]:
    """The instance's channel type (404 via the router when unknown) and its connection state."""
    found = await call(
        stub.GetInstance, router_service_pb2.GetInstanceRequest(name=name), timeout=settings.api_rpc_timeout_seconds
    )
    state = await call(
        channels.GetConnectionStatus,
        channels_service_pb2.GetConnectionStatusRequest(instance_name=name, include_qr_code=include_qr_code),
        timeout=settings.api_channel_timeout_seconds,
    )
    return channel_name(found.instance.channel), state


@router.get("/{name}/status", response_model=ConnectionStatusOut, dependencies=[InstanceAccess])
async def connection_status(
    name: str, stub: RouterStubDep, channels: ChannelsStubDep, settings: SettingsDep
) -> ConnectionStatusOut:
    """Whether the channel account is connected."""
    channel_type, state = await _connection(name, False, stub, channels, settings)
    return ConnectionStatusOut(**_status_fields(name, channel_type, state))


@router.get("/{name}/qr-code", response_model=QrCodeOut, dependencies=[InstanceAccess])
async def qr_code(name: str, stub: RouterStubDep, channels: ChannelsStubDep, settings: SettingsDep) -> QrCodeOut:
    """The login QR code (base64 PNG) while the instance is connecting; null otherwise."""
    channel_type, state = await _connection(name, True, stub, channels, settings)
    return QrCodeOut(
        **_status_fields(name, channel_type, state),
        qr_code=state.qr_code or None,
        pairing_code=state.pairing_code or None,
    )


_ACTIONS: dict[str, channels_service_pb2.ConnectionAction.ValueType] = {
    "connect": channels_service_pb2.CONNECTION_ACTION_CONNECT,
    "restart": channels_service_pb2.CONNECTION_ACTION_RESTART,
    "logout": channels_service_pb2.CONNECTION_ACTION_LOGOUT,
    "disconnect": channels_service_pb2.CONNECTION_ACTION_DISCONNECT,
}


async def _act(
    name: str, action: str, phone_number: str, stub: RouterStubDep, channels: ChannelsStubDep, settings: Settings
) -> ConnectionActionOut:
    """One ManageConnection call (the channels service checks the key's instance and answers 404 for others)."""
    answer = await call(
        channels.ManageConnection,
        channels_service_pb2.ManageConnectionRequest(
            instance_name=name, action=_ACTIONS[action], phone_number=phone_number
        ),
        timeout=settings.api_channel_timeout_seconds,
    )
    found = await call(
        stub.GetInstance, router_service_pb2.GetInstanceRequest(name=name), timeout=settings.api_rpc_timeout_seconds
    )
    state = answer.status
    return ConnectionActionOut(
        **_status_fields(name, channel_name(found.instance.channel), state),
        qr_code=state.qr_code or None,
        pairing_code=state.pairing_code or None,
        action=action,
        message=answer.message or None,
    )


@router.post("/{name}/connect", response_model=ConnectionActionOut, dependencies=[InstanceAccess])
async def connect(
    name: str,
    stub: RouterStubDep,
    channels: ChannelsStubDep,
    settings: SettingsDep,
    body: ConnectIn | None = None,
) -> ConnectionActionOut:
    """Start a WhatsApp login: the QR code to scan (or, with phone_number, a pairing code), or the state when the
    account is connected already. 502 with Evolution's reason when it refuses."""
    phone = body.phone_number if body is not None and body.phone_number else ""
    return await _act(name, "connect", phone, stub, channels, settings)


@router.post("/{name}/restart", response_model=ConnectionActionOut, dependencies=[InstanceAccess])
async def restart(
    name: str, stub: RouterStubDep, channels: ChannelsStubDep, settings: SettingsDep
) -> ConnectionActionOut:
    """Restart the account's connection (it reconnects with its stored session)."""
    return await _act(name, "restart", "", stub, channels, settings)


@router.post("/{name}/logout", response_model=ConnectionActionOut, dependencies=[InstanceAccess])
async def logout(
    name: str, stub: RouterStubDep, channels: ChannelsStubDep, settings: SettingsDep
) -> ConnectionActionOut:
    """Log the WhatsApp account out (a new QR scan is needed) and forget its recorded QR and account; 409 when it is
    not connected."""
    return await _act(name, "logout", "", stub, channels, settings)


@router.post("/{name}/disconnect", response_model=ConnectionActionOut, dependencies=[InstanceAccess])
async def disconnect(
    name: str, stub: RouterStubDep, channels: ChannelsStubDep, settings: SettingsDep
) -> ConnectionActionOut:
    """Disconnect the account, keeping the Evolution instance: the same logout, but an account that is not connected
    is already disconnected (200, not 409)."""
    return await _act(name, "disconnect", "", stub, channels, settings)
