"""IngressService over gRPC: proto ↔ domain, everything else in the core."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from omni.ingress.v1 import ingress_service_pb2, ingress_service_pb2_grpc

from servicekit.convert import channel_of, message_from_proto
from servicekit.errors import FailedPreconditionError
from servicekit.principals import current_principal
from services.ingress.convert import bot_status_to_proto, dead_letter_to_proto
from services.ingress.core.accept import ACCEPTED, DUPLICATE, IGNORED_DISPOSITION, IngressCore
from services.ingress.core.bots.status import BotStatus
from services.ingress.core.erasure import erase_user
from services.ingress.core.evolution_parser import CONNECTION_EVENTS
from services.ingress.storage import InboxStore

BotStatuses = Callable[[str], Awaitable[list[BotStatus]]]
"""The hosted bots' statuses, filtered by instance name ("" for all)."""
ConnectionEventSink = Callable[[str, bytes], Awaitable[None]]
"""Relays an authenticated connection webhook (instance name, raw body) to channels; never raises."""

DISPOSITIONS = {
    ACCEPTED: ingress_service_pb2.WEBHOOK_DISPOSITION_ACCEPTED,
    DUPLICATE: ingress_service_pb2.WEBHOOK_DISPOSITION_DUPLICATE,
    IGNORED_DISPOSITION: ingress_service_pb2.WEBHOOK_DISPOSITION_IGNORED,
}

Context = grpc.aio.ServicerContext[Any, Any]


class IngressServicer(ingress_service_pb2_grpc.IngressServiceServicer):
    """Thin adapter over `IngressCore`; domain errors are mapped by the server's interceptor."""

    def __init__(
        self, core: IngressCore, bot_statuses: BotStatuses, connection_events: ConnectionEventSink | None = None
    ) -> None:
        self._core = core
        self._bot_statuses = bot_statuses
        self._connection_events = connection_events

    async def ReceiveWebhook(
        self, request: ingress_service_pb2.ReceiveWebhookRequest, context: Context
    ) -> ingress_service_pb2.ReceiveWebhookResponse:
        result = await self._core.receive_webhook(
            request.instance_name, channel_of(request.channel), request.body, dict(request.headers)
        )
        if result.event in CONNECTION_EVENTS and self._connection_events is not None:
            # Only reached once the webhook authenticated (receive_webhook raises otherwise).
            await self._connection_events(request.instance_name, request.body)
        return ingress_service_pb2.ReceiveWebhookResponse(
            disposition=DISPOSITIONS[result.disposition],
            message_id=result.message_id,
            reason=result.reason,
            trace_id=result.trace_id,
            event=result.event,
            challenge=result.challenge,
        )

    async def IngestMessage(
        self, request: ingress_service_pb2.IngestMessageRequest, context: Context
    ) -> ingress_service_pb2.IngestMessageResponse:
        result = await self._core.ingest_message(message_from_proto(request.message))
        return ingress_service_pb2.IngestMessageResponse(message_id=result.message_id, duplicate=result.duplicate)

    async def ListDeadLetters(
        self, request: ingress_service_pb2.ListDeadLettersRequest, context: Context
    ) -> ingress_service_pb2.ListDeadLettersResponse:
        caller = current_principal()
        # A scoped key sees its own instance's letters only, whatever filter it sent.
        instance_name = caller.instance_name if caller.is_scoped else request.instance_name
        letters, total = await self._core.list_dead_letters(instance_name, request.page, request.page_size)
        return ingress_service_pb2.ListDeadLettersResponse(
            dead_letters=[dead_letter_to_proto(letter) for letter in letters], total_count=total
        )

    async def RedeliverDeadLetter(
        self, request: ingress_service_pb2.RedeliverDeadLetterRequest, context: Context
    ) -> ingress_service_pb2.RedeliverDeadLetterResponse:
        caller = current_principal()
        if request.instance_name:
            caller.require_instance(request.instance_name)
        scope = caller.instance_name if caller.is_scoped else request.instance_name
        redelivered = await self._core.redeliver_dead_letter(request.id, scope)
        return ingress_service_pb2.RedeliverDeadLetterResponse(id=redelivered)

    async def PurgeInstance(
        self, request: ingress_service_pb2.PurgeInstanceRequest, context: Context
    ) -> ingress_service_pb2.PurgeInstanceResponse:
        deleted = await self._core.purge_instance(request.instance_name)
        return ingress_service_pb2.PurgeInstanceResponse(deleted_rows=deleted)

    async def EraseUser(
        self, request: ingress_service_pb2.EraseUserRequest, context: Context
    ) -> ingress_service_pb2.EraseUserResponse:
        # Mesh only (not a public RPC): the router erases a user. The core's inbox store is the one erasure acts on.
        store = self._core._store
        if not isinstance(store, InboxStore):
            raise FailedPreconditionError("this ingress store cannot erase messages")
        deleted = await erase_user(store, request.instance_name, list(request.chat_ids), list(request.sender_ids))
        return ingress_service_pb2.EraseUserResponse(messages_deleted=deleted)

    async def GetMedia(
        self, request: ingress_service_pb2.GetMediaRequest, context: Context
    ) -> ingress_service_pb2.GetMediaResponse:
        # Mesh only (not a public RPC): the router reads a file of the message it is routing.
        blob = await self._core.get_media(request.instance_name, request.blob_id)
        return ingress_service_pb2.GetMediaResponse(data=blob.data, mime_type=blob.mime_type)

    async def ListBots(
        self, request: ingress_service_pb2.ListBotsRequest, context: Context
    ) -> ingress_service_pb2.ListBotsResponse:
        caller = current_principal()
        if request.instance_name:
            caller.require_instance(request.instance_name)
        statuses = await self._bot_statuses(caller.instance_name if caller.is_scoped else request.instance_name)
        return ingress_service_pb2.ListBotsResponse(bots=[bot_status_to_proto(s) for s in statuses])
