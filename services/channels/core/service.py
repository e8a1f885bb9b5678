"""The channels use cases behind the gRPC API: send a reply, show typing, report a connection.

Only WhatsApp through Evolution is implemented; the instance's own Evolution URL, key and instance name are
used for every call, so tenants never cross.
"""

from __future__ import annotations

import dataclasses

from opentelemetry import trace

from servicekit import trace_attributes as attrs
from servicekit.errors import FailedPreconditionError, FieldViolation, InvalidArgumentError, UnavailableError
from servicekit.instances import InstanceConfig, InstanceDirectory
from services.channels.core.evolution import EvolutionClient, EvolutionError
from services.channels.core.models import (
    MEDIA_KINDS,
    ConnectionState,
    ConnectionStatus,
    PartResult,
    SendRequest,
)
from services.channels.core.outbox import OutboxSender

CHAT_ID_ATTRIBUTE = "omni.chat_id"
PART_COUNT_ATTRIBUTE = "omni.part_count"
MESSAGE_IDS_ATTRIBUTE = "omni.channel_message_ids"
IDEMPOTENCY_KEY_ATTRIBUTE = "omni.idempotency_key"

REASON_NOT_SUPPORTED = "CHANNEL_NOT_SUPPORTED"
REASON_MISCONFIGURED = "INSTANCE_MISCONFIGURED"

PRESENCES = frozenset({"composing", "recording", "paused"})

_EVOLUTION_STATES = {
    "open": ConnectionState.CONNECTED,
    "connecting": ConnectionState.CONNECTING,
    "close": ConnectionState.DISCONNECTED,
}


class ChannelsCore:
    """Outbound sends, presence and connection status, for instances looked up in `instances`."""

    def __init__(
        self,
        instances: InstanceDirectory,
        evolution: EvolutionClient,
        outbox: OutboxSender,
        *,
        tracer: trace.Tracer | None = None,
        fallback_evolution_key: str = "",
    ) -> None:
        self._instances = instances
        self._fallback_evolution_key = fallback_evolution_key
        self._evolution = evolution
        self._outbox = outbox
        self._tracer = tracer or trace.get_tracer(__name__)

    async def send_message(self, request: SendRequest) -> list[PartResult]:
        """Send the parts of `request` in order, idempotently per (idempotency_key, part index)."""
        _validate_send(request)
        instance = await self._whatsapp_instance(request.instance_name)
        parts = [
            dataclasses.replace(part, quoted_message_id=request.quoted_message_id if index == 0 else "")
            for index, part in enumerate(request.parts)
        ]
        with self._tracer.start_as_current_span("channels.send") as span:
            span.set_attribute(attrs.STEP, attrs.STEP_CHANNEL_SEND)
            span.set_attribute(attrs.INSTANCE_NAME, instance.name)
            span.set_attribute(CHAT_ID_ATTRIBUTE, request.chat_id)
            span.set_attribute(PART_COUNT_ATTRIBUTE, len(parts))
            span.set_attribute(IDEMPOTENCY_KEY_ATTRIBUTE, request.idempotency_key)
            try:
                results = await self._outbox.send(instance, request.chat_id, request.idempotency_key, parts)
            finally:
                sent = [r.channel_message_id for r in await self._outbox.results(request.idempotency_key)]
                span.set_attribute(MESSAGE_IDS_ATTRIBUTE, [m for m in sent if m])
            if results and results[0].channel_message_id:
                span.set_attribute(attrs.CHANNEL_MESSAGE_ID, results[0].channel_message_id)
            return results

    async def send_presence(self, instance_name: str, chat_id: str, presence: str, duration_ms: int) -> None:
        """Show or clear a typing indicator: one try, failures reported as UNAVAILABLE."""
        violations = []
        if not chat_id:
            violations.append(FieldViolation("chat_id", "required"))
        if presence not in PRESENCES:
            violations.append(FieldViolation("presence", "must be composing, recording or paused"))
        if violations:
            raise InvalidArgumentError("invalid presence request", violations=violations)
        instance = await self._whatsapp_instance(instance_name)
        try:
            await self._evolution.send_presence(instance, chat_id, presence, max(0, duration_ms))
        except EvolutionError as exc:
            raise UnavailableError(f"presence not sent: {exc.message}") from None

    async def get_connection_status(self, instance_name: str, *, include_qr_code: bool = False) -> ConnectionStatus:
        """The instance's WhatsApp connection; gateway failures come back as state ERROR with the detail."""
        instance = await self._whatsapp_instance(instance_name)
        try:
            raw = await self._evolution.connection_state(instance)
        except EvolutionError as exc:
            return ConnectionStatus(state=ConnectionState.ERROR, detail=exc.message)
        state = _EVOLUTION_STATES.get(raw, ConnectionState.ERROR)
        status = ConnectionStatus(
            state=state, raw_state=raw, detail="" if state is not ConnectionState.ERROR else f"unknown state {raw!r}"
        )
        if not include_qr_code or state is ConnectionState.CONNECTED:
            return status
        try:
            info = await self._evolution.connect(instance)
        except EvolutionError as exc:
            return dataclasses.replace(status, detail=f"QR code unavailable: {exc.message}")
        if info.error:
            return dataclasses.replace(status, detail=f"QR code unavailable: {info.error}")
        if info.state == "open":
            return ConnectionStatus(state=ConnectionState.CONNECTED, raw_state="open")
        return dataclasses.replace(
            status,
            state=ConnectionState.CONNECTING if state is ConnectionState.DISCONNECTED else state,
            qr_code=info.qr_code,
            pairing_code=info.pairing_code,
        )

    async def _whatsapp_instance(self, name: str) -> InstanceConfig:
        if not name:
            raise InvalidArgumentError(
                "instance_name is required", violations=[FieldViolation("instance_name", "required")]
            )
        instance = await self._instances.get(name)
        if instance.channel != "whatsapp":
            raise FailedPreconditionError(
                f"sending on {instance.channel} is not supported yet", reason=REASON_NOT_SUPPORTED
            )
        if not (instance.evolution_url and instance.whatsapp_instance):
            raise FailedPreconditionError(
                f"instance {name!r} has no Evolution URL or WhatsApp instance name", reason=REASON_MISCONFIGURED
            )
        if not instance.evolution_key and self._fallback_evolution_key:
            # EVOLUTION_API_KEY of the public contract: the deployment-wide key, for instances created without one.
            instance = dataclasses.replace(instance, evolution_key=self._fallback_evolution_key)
        return instance


def _validate_send(request: SendRequest) -> None:
    violations: list[FieldViolation] = []
    if not request.chat_id:
        violations.append(FieldViolation("chat_id", "required"))
    if not request.idempotency_key:
        violations.append(FieldViolation("idempotency_key", "required"))
    if not request.parts:
        violations.append(FieldViolation("parts", "at least one part is required"))
    for index, part in enumerate(request.parts):
        if part.media is None and not part.text.strip():
            violations.append(FieldViolation(f"parts[{index}]", "a part needs text or media"))
        if part.media is not None:
            if not (part.media.url or part.media.base64):
                violations.append(FieldViolation(f"parts[{index}].media", "url or base64 is required"))
            if part.media.kind and part.media.kind not in MEDIA_KINDS:
                violations.append(FieldViolation(f"parts[{index}].media.type", "not a sendable media type"))
    if request.instance_name == "":
        violations.append(FieldViolation("instance_name", "required"))
    if violations:
        raise InvalidArgumentError("invalid send request", violations=violations)
