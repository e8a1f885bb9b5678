"""The `ChannelSender` and `AccountChecker` the core uses, over the channels service's gRPC API."""

from __future__ import annotations

import logging

import grpc
from omni.channels.v1 import channels_service_pb2, channels_service_pb2_grpc, outbound_pb2

from servicekit.convert import (
    contact_card_to_proto,
    instance_to_proto,
    location_to_proto,
    media_to_proto,
    profile_from_proto,
    reaction_to_proto,
)
from servicekit.errors import FailedPreconditionError, OmniError, UnavailableError
from servicekit.grpc_clients import call
from servicekit.instances import Instance
from servicekit.messages import OutboundPart, Profile
from servicekit.secret_grants import CHANNEL_CREDENTIALS, WEBHOOK_REGISTRATION
from services.router.core.models import ChannelAccount, OutgoingMessage
from services.router.core.ports import Provisioning

log = logging.getLogger(__name__)


class GrpcChannelSender:
    """Sends replies and typing indicators through ChannelsService, each call under its own deadline."""

    def __init__(
        self,
        stub: channels_service_pb2_grpc.ChannelsServiceAsyncStub,
        *,
        send_timeout: float = 30.0,
        presence_timeout: float = 2.0,
    ) -> None:
        self._stub = stub
        self._send_timeout = send_timeout
        self._presence_timeout = presence_timeout

    async def send(self, message: OutgoingMessage) -> list[str]:
        request = channels_service_pb2.SendMessageRequest(
            instance_name=message.instance_name,
            chat_id=message.chat_id,
            idempotency_key=message.idempotency_key,
            quoted_message_id=message.quoted_message_id,
            thread_id=message.thread_id,
            parts=[_part_to_proto(part) for part in message.parts],
        )
        response = await call(self._stub.SendMessage, request, timeout=self._send_timeout)
        ids: list[str] = []
        for result in response.results:
            if result.state == outbound_pb2.PART_STATE_FAILED:
                raise FailedPreconditionError(
                    result.error_message or f"part {result.index} refused", reason="CHANNEL_REJECTED"
                )
            if result.state != outbound_pb2.PART_STATE_SENT:
                raise UnavailableError(
                    f"part {result.index} not sent yet ({outbound_pb2.PartState.Name(result.state)})"
                )
            ids.append(result.channel_message_id)
        return ids

    async def composing(self, instance_name: str, chat_id: str) -> None:
        request = channels_service_pb2.SendPresenceRequest(
            instance_name=instance_name, chat_id=chat_id, presence=outbound_pb2.PRESENCE_COMPOSING, duration_ms=5000
        )
        try:
            await call(self._stub.SendPresence, request, timeout=self._presence_timeout)
        except (OmniError, grpc.aio.AioRpcError) as exc:
            log.debug("typing indicator for %s not shown: %s", instance_name, exc)

    async def presence(self, instance_name: str, chat_id: str, presence: str, duration_ms: int) -> None:
        request = channels_service_pb2.SendPresenceRequest(
            instance_name=instance_name,
            chat_id=chat_id,
            presence=_PRESENCES.get(presence, outbound_pb2.PRESENCE_UNSPECIFIED),
            duration_ms=duration_ms,
        )
        # Evolution holds the request open for the whole duration before it answers.
        await call(self._stub.SendPresence, request, timeout=self._send_timeout + duration_ms / 1000)

    async def fetch_profile(self, instance_name: str, chat_id: str) -> Profile:
        request = channels_service_pb2.FetchProfileRequest(instance_name=instance_name, chat_id=chat_id)
        answer = await call(self._stub.FetchProfile, request, timeout=self._send_timeout)
        return profile_from_proto(answer.profile)


def _part_to_proto(part: OutboundPart) -> outbound_pb2.OutboundPart:
    return outbound_pb2.OutboundPart(
        text=part.text,
        media=media_to_proto(part.media) if part.media is not None else None,
        reaction=reaction_to_proto(part.reaction) if part.reaction is not None else None,
        location=location_to_proto(part.location) if part.location is not None else None,
        contacts=[contact_card_to_proto(card) for card in part.contacts],
    )


_PRESENCES = {
    "composing": outbound_pb2.PRESENCE_COMPOSING,
    "recording": outbound_pb2.PRESENCE_RECORDING,
    "paused": outbound_pb2.PRESENCE_PAUSED,
    "available": outbound_pb2.PRESENCE_AVAILABLE,
}


class GrpcAccountChecker:
    """Asks ChannelsService.CheckAccount whether an instance's credentials work, before the instance is stored, and
    RegisterWebhook to point the channel's webhook at the hub with the instance's secret."""

    def __init__(self, stub: channels_service_pb2_grpc.ChannelsServiceAsyncStub, *, timeout: float = 15.0) -> None:
        self._stub = stub
        self._timeout = timeout

    async def check(self, instance: Instance) -> ChannelAccount:
        request = channels_service_pb2.CheckAccountRequest(
            instance=instance_to_proto(instance, with_secrets=CHANNEL_CREDENTIALS)
        )
        answer = await call(self._stub.CheckAccount, request, timeout=self._timeout)
        return ChannelAccount(answer.account_id, answer.account_name, answer.workspace_id, answer.workspace_name)

    async def register_webhook(self, instance: Instance, webhook_url: str) -> None:
        request = channels_service_pb2.RegisterWebhookRequest(
            instance=instance_to_proto(instance, with_secrets=WEBHOOK_REGISTRATION), webhook_url=webhook_url
        )
        await call(self._stub.RegisterWebhook, request, timeout=self._timeout)


class GrpcProvisioner:
    """`InstanceProvisioner` over ChannelsService: the instance travels with the secrets provisioning needs (the
    channel credentials and the webhook secret the gateway must send back), as for RegisterWebhook."""

    def __init__(self, stub: channels_service_pb2_grpc.ChannelsServiceAsyncStub, *, timeout: float = 30.0) -> None:
        self._stub = stub
        self._timeout = timeout
        """Evolution's instance/create waits up to 5 s for the first QR, and fetchInstances comes before it."""

    async def provision(self, instance: Instance, webhook_url: str) -> Provisioning:
        request = channels_service_pb2.ProvisionInstanceRequest(
            instance=instance_to_proto(instance, with_secrets=WEBHOOK_REGISTRATION), webhook_url=webhook_url
        )
        answer = await call(self._stub.ProvisionInstance, request, timeout=self._timeout)
        return Provisioning(
            provisioned=answer.provisioned, created=answer.created, instance_token=answer.instance_token
        )

    async def delete_remote(self, instance_name: str) -> bool:
        request = channels_service_pb2.DeleteRemoteInstanceRequest(instance_name=instance_name)
        answer = await call(self._stub.DeleteRemoteInstance, request, timeout=self._timeout)
        return answer.deleted
