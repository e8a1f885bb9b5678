"""The channels use cases behind the gRPC API: send a reply, show typing, report a connection, check an account,
list channels. Each goes to the instance's channel sender (`senders`), with the instance's own credentials, so
tenants never cross; nothing here names a channel."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from opentelemetry import trace

from servicekit import trace_attributes as attrs
from servicekit.channels import Channel
from servicekit.errors import (
    FailedPreconditionError,
    FieldViolation,
    InvalidArgumentError,
    UnavailableError,
)
from servicekit.instances import Instance, InstanceDirectory
from servicekit.messages import MEDIA_TYPES
from services.channels.core.models import ConnectionStatus, PartResult, SendRequest
from services.channels.core.outbox import OutboxSender
from services.channels.core.senders.base import (
    Account,
    ChannelError,
    ChannelRejectedError,
    ChannelSender,
    ChatChannel,
    Contact,
)

CHAT_ID_ATTRIBUTE = "omni.chat_id"
PART_COUNT_ATTRIBUTE = "omni.part_count"
MESSAGE_IDS_ATTRIBUTE = "omni.channel_message_ids"
IDEMPOTENCY_KEY_ATTRIBUTE = "omni.idempotency_key"

REASON_NOT_SUPPORTED = "CHANNEL_NOT_SUPPORTED"
REASON_ACCOUNT_REJECTED = "ACCOUNT_REJECTED"

PRESENCES = frozenset({"composing", "recording", "paused"})


class ChannelsCore:
    """Outbound sends, presence, connection status and account checks, for instances looked up in `instances`."""

    def __init__(
        self,
        instances: InstanceDirectory,
        senders: Mapping[Channel, ChannelSender],
        outbox: OutboxSender,
        *,
        tracer: trace.Tracer | None = None,
    ) -> None:
        self._instances = instances
        self._senders = senders
        self._outbox = outbox
        self._tracer = tracer or trace.get_tracer(__name__)

    async def send_message(self, request: SendRequest) -> list[PartResult]:
        """Send the parts of `request` in order, idempotently per (idempotency_key, part index)."""
        _validate_send(request)
        instance, _ = await self._instance(request.instance_name)
        parts = [
            dataclasses.replace(
                part,
                quoted_message_id=request.quoted_message_id if index == 0 else "",
                thread_id=request.thread_id,
            )
            for index, part in enumerate(request.parts)
        ]
        with self._tracer.start_as_current_span("channels.send") as span:
            span.set_attribute(attrs.STEP, attrs.STEP_CHANNEL_SEND)
            span.set_attribute(attrs.INSTANCE_NAME, instance.name)
            span.set_attribute(attrs.SOURCE_CHANNEL, instance.channel.value)
            span.set_attribute(CHAT_ID_ATTRIBUTE, request.chat_id)
            span.set_attribute(PART_COUNT_ATTRIBUTE, len(parts))
            span.set_attribute(IDEMPOTENCY_KEY_ATTRIBUTE, request.idempotency_key)
            try:
                results = await self._outbox.send(instance, request.chat_id, request.idempotency_key, parts)
            finally:
                sent = [r.channel_message_id for r in await self._outbox.results(request.idempotency_key)]
                span.set_attribute(MESSAGE_IDS_ATTRIBUTE, [m for m in sent if m])
            # The sent ids are under MESSAGE_IDS_ATTRIBUTE; omni.channel_message_id names the inbound message of
            # the trace, and setting it here made the trace show the reply's id whenever this span arrived first.
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
        instance, sender = await self._instance(instance_name)
        try:
            await sender.send_presence(instance, chat_id, presence, max(0, duration_ms))
        except ChannelError as exc:
            raise UnavailableError(f"presence not sent: {exc.message}") from None

    async def get_connection_status(self, instance_name: str, *, include_qr_code: bool = False) -> ConnectionStatus:
        """The instance's channel connection; a channel that cannot be asked gives state ERROR with the detail."""
        instance, sender = await self._instance(instance_name)
        return await sender.connection_status(instance, include_qr_code=include_qr_code)

    async def check_account(self, instance: Instance) -> Account:
        """Whether the channel accepts an instance's credentials (the instance is not stored yet)."""
        sender = self._sender(instance)
        try:
            return await sender.check_account(instance)
        except ChannelRejectedError as exc:
            raise InvalidArgumentError(
                exc.message,
                reason=REASON_ACCOUNT_REJECTED,
                violations=[FieldViolation(f"{instance.channel.value}.credentials", exc.message)],
            ) from None
        except ChannelError as exc:
            raise UnavailableError(f"{instance.channel} could not check the account: {exc.message}") from None

    async def register_webhook(self, instance: Instance, webhook_url: str) -> bool:
        """Point the channel's webhook at the hub (the instance may not be stored yet)."""
        sender = self._sender(instance)
        try:
            return await sender.register_webhook(instance, webhook_url)
        except ChannelRejectedError as exc:
            raise InvalidArgumentError(
                f"{instance.channel} refused the webhook registration: {exc.message}",
                reason=REASON_ACCOUNT_REJECTED,
                violations=[FieldViolation(f"{instance.channel.value}.credentials", exc.message)],
            ) from None
        except ChannelError as exc:
            raise UnavailableError(f"{instance.channel} could not register the webhook: {exc.message}") from None

    async def list_channels(self, instance_name: str) -> list[ChatChannel]:
        """The channels the instance's account sees."""
        instance, sender = await self._instance(instance_name)
        try:
            return await sender.list_channels(instance)
        except ChannelError as exc:
            raise UnavailableError(f"{instance.channel} did not list the channels: {exc.message}") from None

    async def list_contacts(
        self, instance_name: str, *, page: int, page_size: int, search: str = ""
    ) -> tuple[list[Contact], int]:
        """One page of the people the instance's account can message, and how many match in all."""
        instance, sender = await self._instance(instance_name)
        try:
            contacts = await sender.list_contacts(instance)
        except ChannelError as exc:
            raise UnavailableError(f"{instance.channel} did not list the contacts: {exc.message}") from None
        if contacts is None:
            raise FailedPreconditionError(
                f"contacts of a {instance.channel} instance are not listed yet", reason="CONTACTS_NOT_LISTED"
            )
        needle = search.strip().casefold()
        if needle:
            contacts = [c for c in contacts if needle in c.name.casefold() or needle in c.email.casefold()]
        page = max(page, 1)
        page_size = min(page_size if page_size > 0 else 50, 500)
        start = (page - 1) * page_size
        return contacts[start : start + page_size], len(contacts)

    async def purge_instance(self, instance_name: str) -> int:
        """Delete every outbox row of a deleted instance (its idempotency keys with them), so a new instance of the
        same name inherits nothing; returns how many. Idempotent, and needs no instance: it is gone already."""
        if not instance_name:
            raise InvalidArgumentError(
                "instance_name is required", violations=[FieldViolation("instance_name", "required")]
            )
        return await self._outbox.purge_instance(instance_name)

    async def _instance(self, name: str) -> tuple[Instance, ChannelSender]:
        if not name:
            raise InvalidArgumentError(
                "instance_name is required", violations=[FieldViolation("instance_name", "required")]
            )
        instance = await self._instances.get(name)
        return instance, self._sender(instance)

    def _sender(self, instance: Instance) -> ChannelSender:
        sender = self._senders.get(instance.channel)
        if sender is None:
            raise FailedPreconditionError(
                f"sending on {instance.channel} is not supported yet", reason=REASON_NOT_SUPPORTED
            )
        return sender


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
            if part.media.type and part.media.type not in MEDIA_TYPES:
                violations.append(FieldViolation(f"parts[{index}].media.type", "not a sendable media type"))
    if request.instance_name == "":
        violations.append(FieldViolation("instance_name", "required"))
    if violations:
        raise InvalidArgumentError("invalid send request", violations=violations)
