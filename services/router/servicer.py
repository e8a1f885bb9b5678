"""RouterService over gRPC: converts protos to domain values and delegates to the cores."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from omni.router.v1 import instance_pb2, router_service_pb2, router_service_pb2_grpc

from servicekit.convert import (
    NO_SECRETS,
    OUTCOME_VALUES,
    channel_of,
    contact_card_from_proto,
    instance_from_proto,
    instance_to_proto,
    location_from_proto,
    media_from_proto,
    message_from_proto,
    profile_to_proto,
    reaction_from_proto,
    timestamp,
)
from servicekit.errors import FieldViolation, InvalidArgumentError
from servicekit.instances import Instance
from servicekit.principals import current_principal
from servicekit.secret_grants import secrets_for
from services.router.convert import api_key_to_proto, change_to_proto
from services.router.core.api_keys import ApiKeyService
from services.router.core.api_sends import ApiSender
from services.router.core.instances import InstanceService
from services.router.core.router import MessageRouter

Context = grpc.aio.ServicerContext[object, object]


class RouterServicer(router_service_pb2_grpc.RouterServiceServicer):
    """Thin adapter; domain errors raised by the cores are mapped to statuses by the server's interceptor."""

    def __init__(
        self, *, instances: InstanceService, router: MessageRouter, api_sender: ApiSender, api_keys: ApiKeyService
    ) -> None:
        self._instances = instances
        self._api_keys = api_keys
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
        current_principal().require_instance(request.instance_name)
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
        current_principal().require_instance(request.instance_name)
        result = await self._api.send_media(
            request.instance_name,
            request.recipient,
            media_from_proto(request.media),
            session_id=request.session_id,
            idempotency_key=request.idempotency_key,
        )
        return router_service_pb2.SendMediaResponse(message_ids=list(result.message_ids), trace_id=result.trace_id)

    async def SendReaction(
        self, request: router_service_pb2.SendReactionRequest, context: Context
    ) -> router_service_pb2.SendReactionResponse:
        current_principal().require_instance(request.instance_name)
        result = await self._api.send_reaction(
            request.instance_name,
            request.recipient,
            reaction_from_proto(request.reaction),
            session_id=request.session_id,
            idempotency_key=request.idempotency_key,
        )
        return router_service_pb2.SendReactionResponse(message_ids=list(result.message_ids), trace_id=result.trace_id)

    async def SendLocation(
        self, request: router_service_pb2.SendLocationRequest, context: Context
    ) -> router_service_pb2.SendLocationResponse:
        current_principal().require_instance(request.instance_name)
        result = await self._api.send_location(
            request.instance_name,
            request.recipient,
            location_from_proto(request.location),
            session_id=request.session_id,
            idempotency_key=request.idempotency_key,
        )
        return router_service_pb2.SendLocationResponse(message_ids=list(result.message_ids), trace_id=result.trace_id)

    async def SendContact(
        self, request: router_service_pb2.SendContactRequest, context: Context
    ) -> router_service_pb2.SendContactResponse:
        current_principal().require_instance(request.instance_name)
        result = await self._api.send_contact(
            request.instance_name,
            request.recipient,
            [contact_card_from_proto(card) for card in request.contacts],
            session_id=request.session_id,
            idempotency_key=request.idempotency_key,
        )
        return router_service_pb2.SendContactResponse(message_ids=list(result.message_ids), trace_id=result.trace_id)

    async def SendPresence(
        self, request: router_service_pb2.SendPresenceRequest, context: Context
    ) -> router_service_pb2.SendPresenceResponse:
        current_principal().require_instance(request.instance_name)
        await self._api.send_presence(request.instance_name, request.recipient, request.presence, request.duration_ms)
        return router_service_pb2.SendPresenceResponse()

    async def FetchProfile(
        self, request: router_service_pb2.FetchProfileRequest, context: Context
    ) -> router_service_pb2.FetchProfileResponse:
        current_principal().require_instance(request.instance_name)
        profile = await self._api.fetch_profile(request.instance_name, request.recipient)
        return router_service_pb2.FetchProfileResponse(profile=profile_to_proto(profile))

    async def CreateInstance(
        self, request: router_service_pb2.CreateInstanceRequest, context: Context
    ) -> router_service_pb2.CreateInstanceResponse:
        current_principal().require_admin()
        created = await self._instances.create(_new_instance(request.instance))
        return router_service_pb2.CreateInstanceResponse(
            instance=instance_to_proto(created, with_secrets=False),
            webhook_secret=created.webhook_secret,
            agent_signing_secret=created.agent_signing_secret,
        )

    async def GetInstance(
        self, request: router_service_pb2.GetInstanceRequest, context: Context
    ) -> router_service_pb2.GetInstanceResponse:
        caller = current_principal()
        caller.require_instance(request.name)
        instance = await self._instances.get(request.name)
        # Clear secrets only to the mesh services that use them (servicekit.secret_grants); others: redacted view.
        scope = secrets_for(caller) if request.view == instance_pb2.INSTANCE_VIEW_WITH_SECRETS else NO_SECRETS
        return router_service_pb2.GetInstanceResponse(instance=instance_to_proto(instance, with_secrets=scope))

    async def ListInstances(
        self, request: router_service_pb2.ListInstancesRequest, context: Context
    ) -> router_service_pb2.ListInstancesResponse:
        current_principal().require_admin()
        instances, total = await self._instances.list_page(
            page=request.page, page_size=request.page_size, channel=channel_of(request.channel)
        )
        return router_service_pb2.ListInstancesResponse(
            instances=[instance_to_proto(i, with_secrets=False) for i in instances], total_count=total
        )

    async def UpdateInstance(
        self, request: router_service_pb2.UpdateInstanceRequest, context: Context
    ) -> router_service_pb2.UpdateInstanceResponse:
        current_principal().require_admin()
        updated = await self._instances.update(instance_from_proto(request.instance), list(request.update_mask.paths))
        return router_service_pb2.UpdateInstanceResponse(instance=instance_to_proto(updated, with_secrets=False))

    async def DeleteInstance(
        self, request: router_service_pb2.DeleteInstanceRequest, context: Context
    ) -> router_service_pb2.DeleteInstanceResponse:
        current_principal().require_admin()
        await self._instances.delete(request.name, delete_remote=request.delete_remote)
        return router_service_pb2.DeleteInstanceResponse()

    async def RotateWebhookSecret(
        self, request: router_service_pb2.RotateWebhookSecretRequest, context: Context
    ) -> router_service_pb2.RotateWebhookSecretResponse:
        current_principal().require_admin()
        secret, previous_valid_until = await self._instances.rotate_webhook_secret(request.instance_name)
        response = router_service_pb2.RotateWebhookSecretResponse(webhook_secret=secret)
        if previous_valid_until:
            response.previous_valid_until.CopyFrom(timestamp(previous_valid_until))
        return response

    async def RotateAgentSigningSecret(
        self, request: router_service_pb2.RotateAgentSigningSecretRequest, context: Context
    ) -> router_service_pb2.RotateAgentSigningSecretResponse:
        current_principal().require_admin()
        secret = await self._instances.rotate_agent_signing_secret(request.instance_name)
        return router_service_pb2.RotateAgentSigningSecretResponse(agent_signing_secret=secret)

    async def WatchInstances(
        self, request: router_service_pb2.WatchInstancesRequest, context: Context
    ) -> AsyncIterator[router_service_pb2.WatchInstancesResponse]:
        scope = secrets_for(current_principal())
        changes = self._instances.watch()
        try:
            async for change in changes:
                kind, instance = change_to_proto(change, scope)
                yield router_service_pb2.WatchInstancesResponse(kind=kind, instance=instance)
        finally:
            # Close the core's generator now (not at garbage collection) so the watcher is unsubscribed at once.
            await changes.aclose()

    async def CreateApiKey(
        self, request: router_service_pb2.CreateApiKeyRequest, context: Context
    ) -> router_service_pb2.CreateApiKeyResponse:
        key, clear = await self._api_keys.create(request.instance_name)
        return router_service_pb2.CreateApiKeyResponse(api_key=api_key_to_proto(key), key=clear)

    async def ListApiKeys(
        self, request: router_service_pb2.ListApiKeysRequest, context: Context
    ) -> router_service_pb2.ListApiKeysResponse:
        keys = await self._api_keys.list(request.instance_name)
        return router_service_pb2.ListApiKeysResponse(api_keys=[api_key_to_proto(k) for k in keys])

    async def RevokeApiKey(
        self, request: router_service_pb2.RevokeApiKeyRequest, context: Context
    ) -> router_service_pb2.RevokeApiKeyResponse:
        await self._api_keys.revoke(request.instance_name, request.id)
        return router_service_pb2.RevokeApiKeyResponse()

    async def AuthenticateApiKey(
        self, request: router_service_pb2.AuthenticateApiKeyRequest, context: Context
    ) -> router_service_pb2.AuthenticateApiKeyResponse:
        key = await self._api_keys.authenticate_for_mesh(request.key)
        return router_service_pb2.AuthenticateApiKeyResponse(api_key=api_key_to_proto(key))


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
