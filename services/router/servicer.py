"""RouterService over gRPC: converts protos to domain values and delegates to the cores."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from omni.router.v1 import instance_pb2, router_service_pb2, router_service_pb2_grpc

from servicekit.convert import (
    OUTCOME_VALUES,
    channel_of,
    instance_from_proto,
    instance_to_proto,
    media_from_proto,
    message_from_proto,
)
from servicekit.errors import FieldViolation, InvalidArgumentError
from servicekit.instances import Instance
from services.router.convert import change_to_proto
from services.router.core.api_sends import ApiSender
from services.router.core.instances import InstanceService
from services.router.core.router import MessageRouter

Context = grpc.aio.ServicerContext[object, object]


class RouterServicer(router_service_pb2_grpc.RouterServiceServicer):
    """Thin adapter; domain errors raised by the cores are mapped to statuses by the server's interceptor."""

    def __init__(self, *, instances: InstanceService, router: MessageRouter, api_sender: ApiSender) -> None:
        self._instances = instances
        self._router = router
        self._api = api_sender

    async def RouteMessage(
        self, request: router_service_pb2.RouteMessageRequest, context: Context
    ) -> router_service_pb2.RouteMessageResponse:
        result = await self._router.route(
            message_from_proto(request.message),
            attempt=request.attempt or 1,
            final_attempt=request.final_attempt,
        )
        return router_service_pb2.RouteMessageResponse(
            outcome=OUTCOME_VALUES[result.outcome],
            error_message=result.error_message,
            user_id=result.user_id,
            session_id=result.session_id,
            sent_message_ids=list(result.sent_message_ids),
        )

    async def SendText(
        self, request: router_service_pb2.SendTextRequest, context: Context
    ) -> router_service_pb2.SendTextResponse:
        result = await self._api.send_text(
            request.instance_name,
            request.recipient,
            request.text,
            session_id=request.session_id,
            idempotency_key=request.idempotency_key,
        )
        return router_service_pb2.SendTextResponse(message_ids=list(result.message_ids), trace_id=result.trace_id)

    async def SendMedia(
        self, request: router_service_pb2.SendMediaRequest, context: Context
    ) -> router_service_pb2.SendMediaResponse:
        result = await self._api.send_media(
            request.instance_name,
            request.recipient,
            media_from_proto(request.media),
            session_id=request.session_id,
            idempotency_key=request.idempotency_key,
        )
        return router_service_pb2.SendMediaResponse(message_ids=list(result.message_ids), trace_id=result.trace_id)

    async def CreateInstance(
        self, request: router_service_pb2.CreateInstanceRequest, context: Context
    ) -> router_service_pb2.CreateInstanceResponse:
        created = await self._instances.create(_new_instance(request.instance))
        return router_service_pb2.CreateInstanceResponse(instance=instance_to_proto(created, with_secrets=False))

    async def GetInstance(
        self, request: router_service_pb2.GetInstanceRequest, context: Context
    ) -> router_service_pb2.GetInstanceResponse:
        instance = await self._instances.get(request.name)
        with_secrets = request.view == instance_pb2.INSTANCE_VIEW_WITH_SECRETS
        return router_service_pb2.GetInstanceResponse(instance=instance_to_proto(instance, with_secrets=with_secrets))

    async def ListInstances(
        self, request: router_service_pb2.ListInstancesRequest, context: Context
    ) -> router_service_pb2.ListInstancesResponse:
        instances, total = await self._instances.list_page(
            page=request.page, page_size=request.page_size, channel=channel_of(request.channel)
        )
        return router_service_pb2.ListInstancesResponse(
            instances=[instance_to_proto(i, with_secrets=False) for i in instances], total_count=total
        )

    async def UpdateInstance(
        self, request: router_service_pb2.UpdateInstanceRequest, context: Context
    ) -> router_service_pb2.UpdateInstanceResponse:
        updated = await self._instances.update(instance_from_proto(request.instance), list(request.update_mask.paths))
        return router_service_pb2.UpdateInstanceResponse(instance=instance_to_proto(updated, with_secrets=False))

    async def DeleteInstance(
        self, request: router_service_pb2.DeleteInstanceRequest, context: Context
    ) -> router_service_pb2.DeleteInstanceResponse:
        await self._instances.delete(request.name)
        return router_service_pb2.DeleteInstanceResponse()

    async def WatchInstances(
        self, request: router_service_pb2.WatchInstancesRequest, context: Context
    ) -> AsyncIterator[router_service_pb2.WatchInstancesResponse]:
        changes = self._instances.watch()
        try:
            async for change in changes:
                kind, instance = change_to_proto(change)
                yield router_service_pb2.WatchInstancesResponse(kind=kind, instance=instance)
        finally:
            # Close the core's generator now (not at garbage collection) so the watcher is unsubscribed at once.
            await changes.aclose()


def _new_instance(proto: instance_pb2.Instance) -> Instance:
    """The instance a create carries; its channel must be named (by `channel` or by the settings' arm) once."""
    arm = proto.WhichOneof("channel_config")
    declared = channel_of(proto.channel)
    if arm is None and declared is None:
        raise InvalidArgumentError(
            "invalid instance", violations=[FieldViolation("channel", "must be whatsapp, discord or slack")]
        )
    if arm is not None and declared is not None and arm != declared.value:
        raise InvalidArgumentError(
            "invalid instance",
            violations=[FieldViolation("channel", f"is {declared} but the channel settings are {arm}'s")],
        )
    return instance_from_proto(proto)
