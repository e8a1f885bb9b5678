"""Fake mesh services for the gateway tests: subclasses of the generated servicers with configurable outcomes.

Each fake answers from a small in-memory model (the router keeps instances and redacts secrets as the real one
must), and a `Script` lets a test replace any RPC's outcome with a canned response or a raised servicekit error,
which the real `ErrorMappingInterceptor` of `new_server` turns into a rich gRPC status.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

import grpc
import orjson
from google.protobuf import timestamp_pb2
from omni.channels.v1 import channels_service_pb2, channels_service_pb2_grpc
from omni.common.v1 import channel_pb2, message_pb2
from omni.ingress.v1 import inbox_pb2, ingress_service_pb2, ingress_service_pb2_grpc
from omni.router.v1 import (
    access_service_pb2,
    access_service_pb2_grpc,
    instance_pb2,
    router_service_pb2,
    router_service_pb2_grpc,
    users_service_pb2,
    users_service_pb2_grpc,
)
from omni.tracing.v1 import trace_pb2, tracing_service_pb2, tracing_service_pb2_grpc

from servicekit.errors import (
    AlreadyExistsError,
    InvalidArgumentError,
    NotFoundError,
    OmniError,
    PermissionDeniedError,
    UnauthenticatedError,
)

Context = grpc.aio.ServicerContext[Any, Any]

GRPC_TIMEOUT_ROUNDING = 1.0
"""Slack for deadline checks: the grpc-timeout header rounds a deadline up to a coarser unit, so the server's
time_remaining() can exceed the client's timeout (seen: 10.099 s of a 10 s timeout, 120.999 s of 120 s)."""

SECRET_PROTO_FIELDS = (
    "agent_api_key",
    "webhook_secret",
    "previous_webhook_secret",
    "agent_signing_secret",
    "whatsapp.evolution_key",
    "discord.bot_token",
    "slack.bot_token",
    "slack.signing_secret",
    "slack.app_token",
)
"""Secret fields of an Instance, as update_mask paths."""


def _field(message: Any, path: str) -> tuple[Any, str]:
    """The message holding the last segment of `path`, and that segment's name."""
    *parents, name = path.split(".")
    for parent in parents:
        message = getattr(message, parent)
    return message, name


class Script:
    """Per-RPC outcomes chosen by a test, plus what each RPC received and how much deadline it had left."""

    def __init__(self) -> None:
        self.errors: dict[str, OmniError] = {}
        self.responses: dict[str, Any] = {}
        self.calls: dict[str, list[Any]] = defaultdict(list)
        self.time_remaining: dict[str, float | None] = {}

    def fail(self, method: str, error: OmniError) -> None:
        """Make `method` raise `error`."""
        self.errors[method] = error

    def respond(self, method: str, response: Any) -> None:
        """Make `method` answer `response`."""
        self.responses[method] = response

    def record(self, method: str, request: Any, context: Context) -> Any:
        """Note the call; raise the scripted error or return the scripted response (None: use the model)."""
        self.calls[method].append(request)
        self.time_remaining[method] = context.time_remaining()
        if method in self.errors:
            raise self.errors[method]
        return self.responses.get(method)


def _now() -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.GetCurrentTime()
    return ts


def redacted(instance: instance_pb2.Instance) -> instance_pb2.Instance:
    """The instance as the router returns it to the gateway: secrets as is_set + hint, never the value."""
    copy = instance_pb2.Instance()
    copy.CopyFrom(instance)
    for path in SECRET_PROTO_FIELDS:
        holder, name = _field(copy, path)
        if holder is not copy and not copy.HasField(path.split(".")[0]):
            continue
        secret = getattr(holder, name)
        if secret.value:
            secret.is_set = True
            secret.hint = "****" + secret.value[-4:]
        secret.value = ""
    return copy


class FakeRouter(router_service_pb2_grpc.RouterServiceServicer):
    """Keeps instances and scoped API keys in memory; sends answer with fixed message ids."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.instances: dict[str, instance_pb2.Instance] = {}
        self.api_keys: dict[str, router_service_pb2.ApiKey] = {}
        """Clear key -> its description (the real router keeps hashes; a fake may keep what a test gave it)."""

    def add_api_key(self, instance_name: str, key_id: str = "") -> str:
        """Issue a scoped key of `instance_name` directly in the model; returns the clear key."""
        key_id = key_id or f"key-{len(self.api_keys) + 1}"
        key = f"omni_sk_{instance_name}_{key_id}_" + "x" * 32
        self.api_keys[key] = router_service_pb2.ApiKey(
            id=key_id, instance_name=instance_name, prefix=key[:12], created_at=_now()
        )
        return key

    async def RouteMessage(
        self, request: router_service_pb2.RouteMessageRequest, context: Context
    ) -> router_service_pb2.RouteMessageResponse:
        canned = self.script.record("RouteMessage", request, context)
        return canned or router_service_pb2.RouteMessageResponse()

    async def SendText(
        self, request: router_service_pb2.SendTextRequest, context: Context
    ) -> router_service_pb2.SendTextResponse:
        canned = self.script.record("SendText", request, context)
        return canned or router_service_pb2.SendTextResponse(message_ids=["wamid-1"], trace_id="ab" * 16)

    async def SendMedia(
        self, request: router_service_pb2.SendMediaRequest, context: Context
    ) -> router_service_pb2.SendMediaResponse:
        canned = self.script.record("SendMedia", request, context)
        return canned or router_service_pb2.SendMediaResponse(message_ids=["wamid-2"], trace_id="cd" * 16)

    async def SendReaction(
        self, request: router_service_pb2.SendReactionRequest, context: Context
    ) -> router_service_pb2.SendReactionResponse:
        canned = self.script.record("SendReaction", request, context)
        return canned or router_service_pb2.SendReactionResponse(message_ids=["wamid-3"], trace_id="ef" * 16)

    async def SendLocation(
        self, request: router_service_pb2.SendLocationRequest, context: Context
    ) -> router_service_pb2.SendLocationResponse:
        canned = self.script.record("SendLocation", request, context)
        return canned or router_service_pb2.SendLocationResponse(message_ids=["wamid-4"], trace_id="0a" * 16)

    async def SendContact(
        self, request: router_service_pb2.SendContactRequest, context: Context
    ) -> router_service_pb2.SendContactResponse:
        canned = self.script.record("SendContact", request, context)
        return canned or router_service_pb2.SendContactResponse(message_ids=["wamid-5"], trace_id="0b" * 16)

    async def SendPresence(
        self, request: router_service_pb2.SendPresenceRequest, context: Context
    ) -> router_service_pb2.SendPresenceResponse:
        canned = self.script.record("SendPresence", request, context)
        return canned or router_service_pb2.SendPresenceResponse()

    async def FetchProfile(
        self, request: router_service_pb2.FetchProfileRequest, context: Context
    ) -> router_service_pb2.FetchProfileResponse:
        canned = self.script.record("FetchProfile", request, context)
        return canned or router_service_pb2.FetchProfileResponse(
            profile=message_pb2.Profile(
                id=f"{request.recipient}@s.whatsapp.net", name="Maria", status="Hey there!", is_business=False
            )
        )

    async def CreateInstance(
        self, request: router_service_pb2.CreateInstanceRequest, context: Context
    ) -> router_service_pb2.CreateInstanceResponse:
        canned = self.script.record("CreateInstance", request, context)
        if canned is not None:
            return canned  # type: ignore[no-any-return]
        name = request.instance.name
        if name in self.instances:
            raise AlreadyExistsError(f"instance {name} already exists")
        stored = instance_pb2.Instance()
        stored.CopyFrom(request.instance)
        stored.created_at.CopyFrom(_now())
        stored.updated_at.CopyFrom(stored.created_at)
        if not stored.webhook_secret.value:
            stored.webhook_secret.value = f"generated-webhook-secret-of-{name}"
        stored.webhook_secret.is_set = True
        stored.agent_signing_secret.value = "whsec_ZmFrZS1zaWduaW5nLWtleS0wMTIzNDU2Nzg5"
        stored.agent_signing_secret.is_set = True
        self.instances[name] = stored
        # As the router: the two secrets the operator must configure elsewhere are revealed once, here.
        return router_service_pb2.CreateInstanceResponse(
            instance=redacted(stored),
            webhook_secret=stored.webhook_secret.value,
            agent_signing_secret=stored.agent_signing_secret.value,
        )

    def _get(self, name: str) -> instance_pb2.Instance:
        if name not in self.instances:
            raise NotFoundError(f"instance {name} not found")
        return self.instances[name]

    async def GetInstance(
        self, request: router_service_pb2.GetInstanceRequest, context: Context
    ) -> router_service_pb2.GetInstanceResponse:
        canned = self.script.record("GetInstance", request, context)
        return canned or router_service_pb2.GetInstanceResponse(instance=redacted(self._get(request.name)))

    async def ListInstances(
        self, request: router_service_pb2.ListInstancesRequest, context: Context
    ) -> router_service_pb2.ListInstancesResponse:
        canned = self.script.record("ListInstances", request, context)
        if canned is not None:
            return canned  # type: ignore[no-any-return]
        names = sorted(self.instances)
        start = (request.page - 1) * request.page_size
        page = [redacted(self.instances[n]) for n in names[start : start + request.page_size]]
        return router_service_pb2.ListInstancesResponse(instances=page, total_count=len(names))

    async def UpdateInstance(
        self, request: router_service_pb2.UpdateInstanceRequest, context: Context
    ) -> router_service_pb2.UpdateInstanceResponse:
        canned = self.script.record("UpdateInstance", request, context)
        if canned is not None:
            return canned  # type: ignore[no-any-return]
        stored = self._get(request.instance.name)
        for path in request.update_mask.paths:
            target, name = _field(stored, path)
            source, _ = _field(request.instance, path)
            if path in SECRET_PROTO_FIELDS:
                getattr(target, name).CopyFrom(getattr(source, name))
            else:
                setattr(target, name, getattr(source, name))
        stored.updated_at.CopyFrom(_now())
        return router_service_pb2.UpdateInstanceResponse(instance=redacted(stored))

    async def DeleteInstance(
        self, request: router_service_pb2.DeleteInstanceRequest, context: Context
    ) -> router_service_pb2.DeleteInstanceResponse:
        self.script.record("DeleteInstance", request, context)
        self._get(request.name)
        del self.instances[request.name]
        return router_service_pb2.DeleteInstanceResponse()

    async def RotateWebhookSecret(
        self, request: router_service_pb2.RotateWebhookSecretRequest, context: Context
    ) -> router_service_pb2.RotateWebhookSecretResponse:
        self.script.record("RotateWebhookSecret", request, context)
        stored = self._get(request.instance_name)
        stored.previous_webhook_secret.CopyFrom(stored.webhook_secret)
        stored.webhook_secret.value = f"rotated-{stored.webhook_secret.value}"[:64]
        answer = router_service_pb2.RotateWebhookSecretResponse(webhook_secret=stored.webhook_secret.value)
        answer.previous_valid_until.CopyFrom(_now())
        answer.previous_valid_until.seconds += 24 * 3600
        return answer

    async def RotateAgentSigningSecret(
        self, request: router_service_pb2.RotateAgentSigningSecretRequest, context: Context
    ) -> router_service_pb2.RotateAgentSigningSecretResponse:
        self.script.record("RotateAgentSigningSecret", request, context)
        stored = self._get(request.instance_name)
        stored.agent_signing_secret.value = "whsec_cm90YXRlZC1zaWduaW5nLWtleS0wMTIzNDU2"
        secret = stored.agent_signing_secret.value
        return router_service_pb2.RotateAgentSigningSecretResponse(agent_signing_secret=secret)

    async def WatchInstances(self, request: router_service_pb2.WatchInstancesRequest, context: Context) -> Any:
        yield router_service_pb2.WatchInstancesResponse(kind=instance_pb2.INSTANCE_CHANGE_KIND_SNAPSHOT_DONE)

    async def CreateApiKey(
        self, request: router_service_pb2.CreateApiKeyRequest, context: Context
    ) -> router_service_pb2.CreateApiKeyResponse:
        self.script.record("CreateApiKey", request, context)
        self._get(request.instance_name)
        key = self.add_api_key(request.instance_name, f"key-{len(self.api_keys) + 1}")
        return router_service_pb2.CreateApiKeyResponse(api_key=self.api_keys[key], key=key)

    async def ListApiKeys(
        self, request: router_service_pb2.ListApiKeysRequest, context: Context
    ) -> router_service_pb2.ListApiKeysResponse:
        self.script.record("ListApiKeys", request, context)
        self._get(request.instance_name)
        keys = [k for k in self.api_keys.values() if k.instance_name == request.instance_name]
        return router_service_pb2.ListApiKeysResponse(api_keys=keys)

    async def RevokeApiKey(
        self, request: router_service_pb2.RevokeApiKeyRequest, context: Context
    ) -> router_service_pb2.RevokeApiKeyResponse:
        self.script.record("RevokeApiKey", request, context)
        for key, described in list(self.api_keys.items()):
            if described.id == request.id and described.instance_name == request.instance_name:
                del self.api_keys[key]
                return router_service_pb2.RevokeApiKeyResponse()
        raise NotFoundError(f"API key {request.id} not found")

    async def AuthenticateApiKey(
        self, request: router_service_pb2.AuthenticateApiKeyRequest, context: Context
    ) -> router_service_pb2.AuthenticateApiKeyResponse:
        canned = self.script.record("AuthenticateApiKey", request, context)
        if canned is not None:
            return canned  # type: ignore[no-any-return]
        if request.key not in self.api_keys:
            raise UnauthenticatedError("invalid API key", reason="API_KEY_INVALID")
        return router_service_pb2.AuthenticateApiKeyResponse(api_key=self.api_keys[request.key])


class FakeIngress(ingress_service_pb2_grpc.IngressServiceServicer):
    """Knows a fixed set of instances; accepts every webhook for them."""

    def __init__(self, script: Script, known: set[str]) -> None:
        self.script = script
        self.known = known
        self.dead = {"dead-1"}
        self.letters: list[inbox_pb2.DeadLetter] = []
        """What ListDeadLetters answers (filtered by instance, paged) when no response is scripted."""

    async def ReceiveWebhook(
        self, request: ingress_service_pb2.ReceiveWebhookRequest, context: Context
    ) -> ingress_service_pb2.ReceiveWebhookResponse:
        canned = self.script.record("ReceiveWebhook", request, context)
        if canned is not None:
            return canned  # type: ignore[no-any-return]
        # As ingress: authentication (an unknown instance fails like a wrong secret) before the body is decoded.
        if request.instance_name not in self.known:
            raise UnauthenticatedError("webhook authentication failed", reason="WEBHOOK_UNAUTHENTICATED")
        try:
            is_object = isinstance(orjson.loads(request.body), dict)
        except orjson.JSONDecodeError:
            is_object = False
        if not is_object:
            raise InvalidArgumentError("the webhook body is not a JSON object", reason="BODY_NOT_JSON")
        decoded = orjson.loads(request.body)
        if decoded.get("type") == "url_verification":
            return ingress_service_pb2.ReceiveWebhookResponse(
                disposition=ingress_service_pb2.WEBHOOK_DISPOSITION_IGNORED,
                reason="url_verification",
                challenge=str(decoded.get("challenge", "")),
            )
        return ingress_service_pb2.ReceiveWebhookResponse(
            disposition=ingress_service_pb2.WEBHOOK_DISPOSITION_ACCEPTED,
            message_id="msg-1",
            trace_id="ef" * 16,
            event="messages.upsert",
        )

    async def IngestMessage(
        self, request: ingress_service_pb2.IngestMessageRequest, context: Context
    ) -> ingress_service_pb2.IngestMessageResponse:
        canned = self.script.record("IngestMessage", request, context)
        return canned or ingress_service_pb2.IngestMessageResponse(message_id="msg-2")

    async def ListDeadLetters(
        self, request: ingress_service_pb2.ListDeadLettersRequest, context: Context
    ) -> ingress_service_pb2.ListDeadLettersResponse:
        canned = self.script.record("ListDeadLetters", request, context)
        if canned is not None:
            return canned  # type: ignore[no-any-return]
        matching = [x for x in self.letters if request.instance_name in ("", x.message.instance_name)]
        start = (max(request.page, 1) - 1) * request.page_size
        return ingress_service_pb2.ListDeadLettersResponse(
            dead_letters=matching[start : start + request.page_size], total_count=len(matching)
        )

    async def ListBots(
        self, request: ingress_service_pb2.ListBotsRequest, context: Context
    ) -> ingress_service_pb2.ListBotsResponse:
        canned = self.script.record("ListBots", request, context)
        return canned or ingress_service_pb2.ListBotsResponse()

    async def RedeliverDeadLetter(
        self, request: ingress_service_pb2.RedeliverDeadLetterRequest, context: Context
    ) -> ingress_service_pb2.RedeliverDeadLetterResponse:
        self.script.record("RedeliverDeadLetter", request, context)
        owner = {x.id: x.message.instance_name for x in self.letters}.get(request.id)
        if request.id not in self.dead or (request.instance_name and owner != request.instance_name):
            raise NotFoundError(f"no dead letter {request.id}")
        return ingress_service_pb2.RedeliverDeadLetterResponse(id=request.id)


class FakeChannels(channels_service_pb2_grpc.ChannelsServiceServicer):
    """Every instance is waiting for a QR scan."""

    def __init__(self, script: Script) -> None:
        self.script = script

    async def SendMessage(
        self, request: channels_service_pb2.SendMessageRequest, context: Context
    ) -> channels_service_pb2.SendMessageResponse:
        canned = self.script.record("SendMessage", request, context)
        return canned or channels_service_pb2.SendMessageResponse()

    async def SendPresence(
        self, request: channels_service_pb2.SendPresenceRequest, context: Context
    ) -> channels_service_pb2.SendPresenceResponse:
        canned = self.script.record("SendPresence", request, context)
        return canned or channels_service_pb2.SendPresenceResponse()

    async def GetConnectionStatus(
        self, request: channels_service_pb2.GetConnectionStatusRequest, context: Context
    ) -> channels_service_pb2.GetConnectionStatusResponse:
        canned = self.script.record("GetConnectionStatus", request, context)
        if canned is not None:
            return canned  # type: ignore[no-any-return]
        return channels_service_pb2.GetConnectionStatusResponse(
            state=channel_pb2.CONNECTION_STATE_CONNECTING,
            raw_state="connecting",
            qr_code="iVBORw0KGgo=" if request.include_qr_code else "",
        )

    async def ListChannels(
        self, request: channels_service_pb2.ListChannelsRequest, context: Context
    ) -> channels_service_pb2.ListChannelsResponse:
        canned = self.script.record("ListChannels", request, context)
        return canned or channels_service_pb2.ListChannelsResponse()

    async def CountConnections(
        self, request: channels_service_pb2.CountConnectionsRequest, context: Context
    ) -> channels_service_pb2.CountConnectionsResponse:
        canned = self.script.record("CountConnections", request, context)
        return canned or channels_service_pb2.CountConnectionsResponse()

    async def ManageConnection(
        self, request: channels_service_pb2.ManageConnectionRequest, context: Context
    ) -> channels_service_pb2.ManageConnectionResponse:
        canned = self.script.record("ManageConnection", request, context)
        return canned or channels_service_pb2.ManageConnectionResponse(
            status=channels_service_pb2.GetConnectionStatusResponse(
                state=channel_pb2.CONNECTION_STATE_CONNECTING, raw_state="connecting", qr_code="iVBORw0KGgo="
            ),
            message="scan the QR code",
        )

    async def DiscoverInstances(
        self, request: channels_service_pb2.DiscoverInstancesRequest, context: Context
    ) -> channels_service_pb2.DiscoverInstancesResponse:
        canned = self.script.record("DiscoverInstances", request, context)
        return canned or channels_service_pb2.DiscoverInstancesResponse(
            instances=[
                channels_service_pb2.RemoteInstance(
                    name="spare",
                    evolution_url="http://evo.test",
                    state=channel_pb2.CONNECTION_STATE_CONNECTED,
                    raw_state="open",
                    owner_jid="5511987650000@s.whatsapp.net",
                )
            ]
        )

    async def ListContacts(
        self, request: channels_service_pb2.ListContactsRequest, context: Context
    ) -> channels_service_pb2.ListContactsResponse:
        canned = self.script.record("ListContacts", request, context)
        return canned or channels_service_pb2.ListContactsResponse(
            contacts=[channels_service_pb2.Contact(id="U0ALICE", name="Alice")], total_count=1
        )

    async def GetContact(
        self, request: channels_service_pb2.GetContactRequest, context: Context
    ) -> channels_service_pb2.GetContactResponse:
        canned = self.script.record("GetContact", request, context)
        return canned or channels_service_pb2.GetContactResponse(
            contact=channels_service_pb2.Contact(id=request.id, name="Alice")
        )

    async def ListChats(
        self, request: channels_service_pb2.ListChatsRequest, context: Context
    ) -> channels_service_pb2.ListChatsResponse:
        canned = self.script.record("ListChats", request, context)
        return canned or channels_service_pb2.ListChatsResponse(
            chats=[channels_service_pb2.Chat(id="120363041857263915@g.us", name="Equipe", chat_type="group")],
            total_count=1,
        )

    async def GetChat(
        self, request: channels_service_pb2.GetChatRequest, context: Context
    ) -> channels_service_pb2.GetChatResponse:
        canned = self.script.record("GetChat", request, context)
        return canned or channels_service_pb2.GetChatResponse(
            chat=channels_service_pb2.Chat(id=request.id, name="Equipe", chat_type="group")
        )


def sample_trace(trace_id: str = "0af7651916cd43dd8448eb211c80319c") -> trace_pb2.Trace:
    """A finished trace with payloads and two spans, as the tracing service would derive it."""
    trace = trace_pb2.Trace(
        trace_id=trace_id,
        instance_name="acme",
        status=trace_pb2.TRACE_STATUS_SENT,
        source_channel="whatsapp",
        source_user_id="5511999999999@s.whatsapp.net",
        session_id="sess-1",
        duration_ms=1234,
        agent_duration_ms=800,
        message_id="msg-1",
        channel_message_id="3EB0ABC",
    )
    trace.created_at.FromSeconds(1_760_000_000)
    trace.updated_at.FromSeconds(1_760_000_001)
    trace.incoming_payload.struct_value.update({"event": "messages.upsert", "data": {"key": {"id": "3EB0ABC"}}})
    trace.agent_request_payload.struct_value.update({"message": "Hello!", "session_id": "sess-1"})
    trace.agent_response_payload.struct_value.update({"text": "Hi there"})
    # outgoing_payload left unset on purpose: it must come back as null.
    agent = trace.spans.add(name="agent.call", span_id="b7ad6b7169203331", parent_span_id="00f067aa0ba902b7")
    agent.start_time.FromMilliseconds(1_760_000_000_100)
    agent.end_time.FromMilliseconds(1_760_000_000_900)
    agent.duration_ms = 800.0
    agent.status = "ok"
    agent.attributes.update({"omni.step": "agent_call", "http.status_code": 200})
    agent.service_name = "omni-router"
    send = trace.spans.add(name="channels.send", span_id="c7ad6b7169203331", status="unset")
    send.start_time.FromMilliseconds(1_760_000_000_950)
    send.end_time.FromMilliseconds(1_760_000_001_000)
    send.duration_ms = 50.0
    return trace


class FakeTracing(tracing_service_pb2_grpc.TracingServiceServicer):
    """Serves the traces a test puts in `traces`."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.traces: dict[str, trace_pb2.Trace] = {}

    async def ListTraces(
        self, request: tracing_service_pb2.ListTracesRequest, context: Context
    ) -> tracing_service_pb2.ListTracesResponse:
        canned = self.script.record("ListTraces", request, context)
        if canned is not None:
            return canned  # type: ignore[no-any-return]
        summaries = []
        for trace in self.traces.values():
            summary = trace_pb2.Trace()
            summary.CopyFrom(trace)
            for field in ("incoming_payload", "agent_request_payload", "agent_response_payload", "outgoing_payload"):
                summary.ClearField(field)
            del summary.spans[:]
            summaries.append(summary)
        return tracing_service_pb2.ListTracesResponse(traces=summaries, total_count=len(summaries))

    async def GetTrace(
        self, request: tracing_service_pb2.GetTraceRequest, context: Context
    ) -> tracing_service_pb2.GetTraceResponse:
        self.script.record("GetTrace", request, context)
        if request.trace_id not in self.traces:
            raise NotFoundError(f"trace {request.trace_id} not found")
        return tracing_service_pb2.GetTraceResponse(trace=self.traces[request.trace_id])

    async def GetTraceAnalytics(
        self, request: tracing_service_pb2.GetTraceAnalyticsRequest, context: Context
    ) -> tracing_service_pb2.GetTraceAnalyticsResponse:
        canned = self.script.record("GetTraceAnalytics", request, context)
        if canned is not None:
            return canned  # type: ignore[no-any-return]
        return tracing_service_pb2.GetTraceAnalyticsResponse(total=len(self.traces))

    async def CleanupTraces(
        self, request: tracing_service_pb2.CleanupTracesRequest, context: Context
    ) -> tracing_service_pb2.CleanupTracesResponse:
        """Counts (and unless dry_run deletes) the traces created before now minus older_than_days."""
        self.script.record("CleanupTraces", request, context)
        cutoff = time.time() - request.older_than_days * 86_400
        old = [tid for tid, trace in self.traces.items() if trace.created_at.ToNanoseconds() / 1e9 < cutoff]
        if not request.dry_run:
            for tid in old:
                del self.traces[tid]
        answer = tracing_service_pb2.CleanupTracesResponse(count=len(old), dry_run=request.dry_run)
        answer.older_than.FromNanoseconds(int(cutoff * 1e9))
        return answer


class FakeAccess(access_service_pb2_grpc.AccessServiceServicer):
    """AccessService with rules in a dict. It checks who may delete what as the router does, but keeps the rule (so
    the auth matrix can ask twice); the real deletion, validation and precedence are tested on the router."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.rules: dict[str, access_service_pb2.AccessRule] = {}

    def add_rule(self, instance_name: str, pattern: str, rule_id: str = "") -> access_service_pb2.AccessRule:
        """Store a block rule directly (as another caller would have created it)."""
        rule = access_service_pb2.AccessRule(
            id=rule_id or f"rule-{len(self.rules) + 1}",
            instance_name=instance_name,
            pattern=pattern,
            rule_type=access_service_pb2.RULE_TYPE_BLOCK,
            scope=access_service_pb2.RULE_SCOPE_SENDER,
        )
        rule.created_at.FromSeconds(1_760_000_000 + len(self.rules))
        self.rules[rule.id] = rule
        return rule

    async def ListRules(
        self, request: access_service_pb2.ListRulesRequest, context: Context
    ) -> access_service_pb2.ListRulesResponse:
        self.script.record("ListRules", request, context)
        rules = [
            r for r in self.rules.values() if not request.instance_name or r.instance_name == request.instance_name
        ]
        return access_service_pb2.ListRulesResponse(rules=sorted(rules, key=lambda r: -r.created_at.seconds))

    async def CreateRule(
        self, request: access_service_pb2.CreateRuleRequest, context: Context
    ) -> access_service_pb2.CreateRuleResponse:
        scripted = self.script.record("CreateRule", request, context)
        if scripted is not None:
            return scripted  # type: ignore[no-any-return]
        if request.rule.instance_name == "ghost":
            raise NotFoundError("instance 'ghost' not found", reason="INSTANCE_NOT_FOUND")
        rule = self.add_rule(request.rule.instance_name, request.rule.pattern)
        rule.rule_type = request.rule.rule_type
        rule.scope = request.rule.scope
        return access_service_pb2.CreateRuleResponse(rule=rule)

    async def DeleteRule(
        self, request: access_service_pb2.DeleteRuleRequest, context: Context
    ) -> access_service_pb2.DeleteRuleResponse:
        self.script.record("DeleteRule", request, context)
        rule = self.rules.get(request.id)
        if rule is None or (request.instance_name and rule.instance_name not in ("", request.instance_name)):
            raise NotFoundError(f"access rule {request.id!r} not found", reason="ACCESS_RULE_NOT_FOUND")
        if request.instance_name and not rule.instance_name:
            raise PermissionDeniedError("a scoped API key cannot delete global rules", reason="ADMIN_ONLY")
        return access_service_pb2.DeleteRuleResponse()

    async def CheckAccess(
        self, request: access_service_pb2.CheckAccessRequest, context: Context
    ) -> access_service_pb2.CheckAccessResponse:
        self.script.record("CheckAccess", request, context)
        for rule in self.rules.values():
            if rule.pattern == request.sender_id and rule.instance_name in ("", request.instance_name):
                return access_service_pb2.CheckAccessResponse(allowed=False, rule=rule, reason=f"blocked by {rule.id}")
        return access_service_pb2.CheckAccessResponse(allowed=True, reason="no rule matches (access_mode open)")


def dead_letter() -> inbox_pb2.DeadLetter:
    """A dead letter as ingress lists it."""
    letter = inbox_pb2.DeadLetter(id="dead-1", attempts=8, last_error="agent unavailable", trace_id="12" * 16)
    letter.message.id = "dead-1"
    letter.message.instance_name = "acme"
    letter.message.channel = channel_pb2.CHANNEL_WHATSAPP
    letter.message.chat_id = "5511999999999@s.whatsapp.net"
    letter.message.sender.id = "5511999999999@s.whatsapp.net"
    letter.message.text = "hello"
    letter.dead_at.FromSeconds(1_760_000_500)
    return letter


__all__ = [
    "FakeAccess",
    "FakeChannels",
    "FakeIngress",
    "FakeRouter",
    "FakeTracing",
    "Script",
    "dead_letter",
    "sample_trace",
]


def fake_user(user_id: str, instance_name: str) -> users_service_pb2.User:
    """A user of `instance_name` with one WhatsApp id and one session (`session-<user_id>`)."""
    session = users_service_pb2.Session(
        id=f"session-{user_id}",
        instance_name=instance_name,
        chat_id="5511999990001@s.whatsapp.net",
        channel="whatsapp",
        session_name="+5511999990001",
        user_id=user_id,
        create_time=_now(),
        last_message_time=_now(),
        message_count=2,
    )
    return users_service_pb2.User(
        id=user_id,
        instance_name=instance_name,
        channel="whatsapp",
        identity="5511999990001@s.whatsapp.net",
        display_name="Maria",
        phone_number="+5511999990001",
        first_seen_time=_now(),
        last_seen_time=_now(),
        message_count=2,
        external_ids=[
            users_service_pb2.ExternalId(
                instance_name=instance_name, channel="whatsapp", external_id="5511999990001@s.whatsapp.net"
            )
        ],
        sessions=[session],
    )


class FakeUsers(users_service_pb2_grpc.UsersServiceServicer):
    """UsersService holding `users` by id; by-id calls honour the request's instance scope as the router does.

    It changes nothing (a link, a delete or a reset answers as the router would and keeps the model), so the same
    call answers the same for every key a test tries; the router's own suite covers the real changes."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.users: dict[str, Any] = {}

    def _user(self, user_id: str, instance_name: str) -> Any:
        user = self.users.get(user_id)
        if user is None or (instance_name and user.instance_name != instance_name):
            raise NotFoundError(f"user {user_id!r} not found", reason="USER_NOT_FOUND")
        return user

    def _session(self, session_id: str, instance_name: str) -> Any:
        for user in self.users.values():
            for session in user.sessions:
                if session.id == session_id and (not instance_name or session.instance_name == instance_name):
                    return session
        raise NotFoundError(f"session {session_id!r} not found", reason="SESSION_NOT_FOUND")

    async def ListUsers(self, request: Any, context: Context) -> Any:
        if (scripted := self.script.record("ListUsers", request, context)) is not None:
            return scripted
        found = [
            u
            for u in self.users.values()
            if (not request.instance_name or u.instance_name == request.instance_name)
            and (not request.search or request.search.lower() in u.display_name.lower())
        ]
        offset = int(request.page_token or 0)
        page = found[offset : offset + request.page_size]
        return users_service_pb2.ListUsersResponse(users=page, total_count=len(found))

    async def GetUser(self, request: Any, context: Context) -> Any:
        if (scripted := self.script.record("GetUser", request, context)) is not None:
            return scripted
        return users_service_pb2.GetUserResponse(user=self._user(request.user_id, request.instance_name))

    async def LinkUsers(self, request: Any, context: Context) -> Any:
        if (scripted := self.script.record("LinkUsers", request, context)) is not None:
            return scripted
        if request.user_id == request.other_user_id:
            raise InvalidArgumentError("a user cannot be linked to itself")
        survivor = self._user(request.user_id, request.instance_name)
        self._user(request.other_user_id, request.instance_name)
        return users_service_pb2.LinkUsersResponse(user=survivor)

    async def DeleteUser(self, request: Any, context: Context) -> Any:
        if (scripted := self.script.record("DeleteUser", request, context)) is not None:
            return scripted
        user = self._user(request.user_id, request.instance_name)
        return users_service_pb2.DeleteUserResponse(
            sessions_deleted=len(user.sessions), traces_deleted=3, inbox_messages_deleted=1
        )

    async def ListSessions(self, request: Any, context: Context) -> Any:
        if (scripted := self.script.record("ListSessions", request, context)) is not None:
            return scripted
        found = [
            s
            for u in self.users.values()
            for s in u.sessions
            if (not request.instance_name or s.instance_name == request.instance_name)
            and (not request.user_id or s.user_id == request.user_id)
        ]
        return users_service_pb2.ListSessionsResponse(sessions=found, total_count=len(found))

    async def GetSession(self, request: Any, context: Context) -> Any:
        if (scripted := self.script.record("GetSession", request, context)) is not None:
            return scripted
        return users_service_pb2.GetSessionResponse(session=self._session(request.session_id, request.instance_name))

    async def ResetSession(self, request: Any, context: Context) -> Any:
        if (scripted := self.script.record("ResetSession", request, context)) is not None:
            return scripted
        reset = users_service_pb2.Session()
        reset.CopyFrom(self._session(request.session_id, request.instance_name))
        reset.id = f"{reset.id}-reset"
        reset.message_count = 0
        return users_service_pb2.ResetSessionResponse(session=reset)
