"""The channels use cases behind the gRPC API: send a reply, show typing, report a connection, check an account,
list channels. Each goes to the instance's channel sender (`senders`), with the instance's own credentials, so
tenants never cross; nothing here names a channel."""

from __future__ import annotations

import dataclasses
import math
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
from servicekit.messages import MEDIA_TYPES, Profile
from services.channels.core import directory
from services.channels.core.connections import ConnectionDesk
from services.channels.core.models import ConnectionStatus, OutboundPart, PartResult, SendRequest
from services.channels.core.outbox import REASON_RATE_LIMITED, REASON_TIMEOUT, REASON_UPSTREAM, OutboxSender
from services.channels.core.senders.base import (
    Account,
    ChannelError,
    ChannelRejectedError,
    ChannelSender,
    ChannelTransientError,
    Chat,
    ChatChannel,
    Contact,
    FetchedMedia,
    MediaSource,
    MediaTooLargeError,
)

CHAT_ID_ATTRIBUTE = "omni.chat_id"
PART_COUNT_ATTRIBUTE = "omni.part_count"
MESSAGE_IDS_ATTRIBUTE = "omni.channel_message_ids"
IDEMPOTENCY_KEY_ATTRIBUTE = "omni.idempotency_key"

REASON_NOT_SUPPORTED = "CHANNEL_NOT_SUPPORTED"
REASON_ACCOUNT_REJECTED = "ACCOUNT_REJECTED"

DEFAULT_FETCH_MAX_BYTES = 16 * 1024 * 1024
"""FetchMedia's cap when the caller names none (the router always does: AUTOMAGIK_OMNI_MAX_MEDIA_BYTES)."""

PRESENCES = frozenset({"composing", "recording", "paused", "available"})
MAX_CONTACT_CARDS = 50


class ChannelsCore:
    """Outbound sends, presence, connection status and account checks, for instances looked up in `instances`."""

    def __init__(
        self,
        instances: InstanceDirectory,
        senders: Mapping[Channel, ChannelSender],
        outbox: OutboxSender,
        *,
        tracer: trace.Tracer | None = None,
        connections: ConnectionDesk | None = None,
    ) -> None:
        self._instances = instances
        self._senders = senders
        self._outbox = outbox
        self._tracer = tracer or trace.get_tracer(__name__)
        self.connections = connections or ConnectionDesk(instances, {})
        """Provisioning, connection actions, discovery and the recorded connection states."""

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
            violations.append(FieldViolation("presence", "must be composing, recording, paused or available"))
        if violations:
            raise InvalidArgumentError("invalid presence request", violations=violations)
        instance, sender = await self._instance(instance_name)
        try:
            await sender.send_presence(instance, chat_id, presence, max(0, duration_ms))
        except ChannelError as exc:
            # Still UNAVAILABLE (a presence is never worth failing a reply for), with the channel's reason so an API
            # caller learns whether the key, the recipient or the channel was at fault.
            raise UnavailableError(f"presence not sent: {exc.message}", reason=_failure_reason(exc)) from None

    async def fetch_profile(self, instance_name: str, chat_id: str) -> Profile:
        """A person's public profile: FAILED_PRECONDITION with the channel's reason when it refuses, UNAVAILABLE
        when it cannot be asked (a read: nothing to reconcile, the caller simply asks again)."""
        if not chat_id:
            raise InvalidArgumentError("chat_id is required", violations=[FieldViolation("chat_id", "required")])
        instance, sender = await self._instance(instance_name)
        try:
            return await sender.fetch_profile(instance, chat_id)
        except ChannelRejectedError as exc:
            raise FailedPreconditionError(exc.message, reason=exc.reason) from None
        except ChannelError as exc:
            raise UnavailableError(f"profile not fetched: {exc.message}", reason=_failure_reason(exc)) from None

    async def get_connection_status(self, instance_name: str, *, include_qr_code: bool = False) -> ConnectionStatus:
        """The instance's channel connection; a channel that cannot be asked gives state ERROR with the detail.
        What the channel last reported (`connections`) answers without a round trip when it can."""
        instance, sender = await self._instance(instance_name)
        recorded = await self.connections.book.status(instance.name, include_qr_code=include_qr_code)
        if recorded is not None:
            return recorded
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
        return await directory.list_contacts_page(sender, instance, page=page, page_size=page_size, search=search)

    async def get_contact(self, instance_name: str, contact_id: str) -> Contact:
        """One contact by the list's id (NOT_FOUND when the channel has none)."""
        instance, sender = await self._instance(instance_name)
        return await directory.find_contact(sender, instance, contact_id)

    async def list_chats(
        self, instance_name: str, *, page: int, page_size: int, search: str = "", chat_type: str = ""
    ) -> tuple[list[Chat], int]:
        """One page of the instance's chats, and how many match in all."""
        instance, sender = await self._instance(instance_name)
        return await directory.list_chats_page(
            sender, instance, page=page, page_size=page_size, search=search, chat_type=chat_type
        )

    async def get_chat(self, instance_name: str, chat_id: str) -> Chat:
        """One chat by the list's id (NOT_FOUND when the channel has none)."""
        instance, sender = await self._instance(instance_name)
        return await directory.find_chat(sender, instance, chat_id)

    async def fetch_media(
        self, instance_name: str, channel_message_id: str, chat_id: str, max_bytes: int = 0
    ) -> FetchedMedia:
        """A received message's file, downloaded from the channel (FetchMedia), at most `max_bytes` (0: this
        service's cap). FAILED_PRECONDITION when the channel cannot (or no longer) give it or it is over the cap,
        UNAVAILABLE when the channel could not be asked."""
        if not channel_message_id:
            raise InvalidArgumentError(
                "channel_message_id is required", violations=[FieldViolation("channel_message_id", "required")]
            )
        instance, sender = await self._instance(instance_name)
        if not isinstance(sender, MediaSource):
            raise FailedPreconditionError(
                f"received files cannot be downloaded on {instance.channel}", reason=REASON_NOT_SUPPORTED
            )
        cap = max_bytes if max_bytes > 0 else DEFAULT_FETCH_MAX_BYTES
        with self._tracer.start_as_current_span("channels.fetch_media") as span:
            span.set_attribute(attrs.INSTANCE_NAME, instance.name)
            span.set_attribute(CHAT_ID_ATTRIBUTE, chat_id)
            try:
                fetched = await sender.fetch_media(instance, channel_message_id, chat_id, cap)
            except MediaTooLargeError as exc:
                span.set_attribute(attrs.MEDIA_NOTE, exc.message)
                raise FailedPreconditionError(exc.message, reason=exc.reason) from None
            except ChannelRejectedError as exc:
                span.set_attribute(attrs.MEDIA_NOTE, exc.message)
                raise FailedPreconditionError(
                    f"{instance.channel} did not give the file: {exc.message}", reason=exc.reason
                ) from None
            except ChannelError as exc:
                span.set_attribute(attrs.MEDIA_NOTE, exc.message)
                raise UnavailableError(f"{instance.channel} could not be asked for the file: {exc.message}") from None
            span.set_attribute("omni.media.size", len(fetched.data))
            return fetched

    async def purge_instance(self, instance_name: str) -> int:
        """Delete every outbox row of a deleted instance (its idempotency keys with them), so a new instance of the
        same name inherits nothing; returns how many. Idempotent, and needs no instance: it is gone already."""
        if not instance_name:
            raise InvalidArgumentError(
                "instance_name is required", violations=[FieldViolation("instance_name", "required")]
            )
        forgotten = await self.connections.book.forget(instance_name)
        return await self._outbox.purge_instance(instance_name) + forgotten

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


def _failure_reason(exc: ChannelError) -> str:
    """The ErrorInfo reason of a channel failure outside the outbox, named as the outbox names its own."""
    if isinstance(exc, ChannelRejectedError):
        return exc.reason
    if isinstance(exc, ChannelTransientError) and exc.rate_limited:
        return REASON_RATE_LIMITED
    if isinstance(exc, ChannelTransientError) and exc.outcome_unknown:
        return REASON_TIMEOUT
    return REASON_UPSTREAM


def _part_violations(index: int, part: OutboundPart) -> list[FieldViolation]:
    """What is wrong with one part: it needs exactly one kind of content, and that content must be whole."""
    field = f"parts[{index}]"
    kinds = [part.media is not None, part.reaction is not None, part.location is not None, bool(part.contacts)]
    if sum(kinds) > 1:
        return [FieldViolation(field, "set at most one of media, reaction, location and contacts")]
    if not any(kinds) and not part.text.strip():
        return [FieldViolation(field, "a part needs text, media, a reaction, a location or contacts")]
    violations: list[FieldViolation] = []
    if part.media is not None:
        if not (part.media.url or part.media.base64):
            violations.append(FieldViolation(f"{field}.media", "url or base64 is required"))
        if part.media.type and part.media.type not in MEDIA_TYPES:
            violations.append(FieldViolation(f"{field}.media.type", "not a sendable media type"))
    if part.reaction is not None and not part.reaction.message_id:
        violations.append(FieldViolation(f"{field}.reaction.message_id", "required"))
    if part.location is not None:
        location = part.location
        if not (math.isfinite(location.latitude) and -90 <= location.latitude <= 90):
            violations.append(FieldViolation(f"{field}.location.latitude", "must be between -90 and 90"))
        if not (math.isfinite(location.longitude) and -180 <= location.longitude <= 180):
            violations.append(FieldViolation(f"{field}.location.longitude", "must be between -180 and 180"))
    if len(part.contacts) > MAX_CONTACT_CARDS:
        violations.append(FieldViolation(f"{field}.contacts", f"at most {MAX_CONTACT_CARDS} cards"))
    for number, card in enumerate(part.contacts):
        if not card.full_name.strip():
            violations.append(FieldViolation(f"{field}.contacts[{number}].full_name", "required"))
        if not any(ch.isdigit() for ch in card.phone_number):
            violations.append(FieldViolation(f"{field}.contacts[{number}].phone_number", "must be a phone number"))
    return violations


def _validate_send(request: SendRequest) -> None:
    violations: list[FieldViolation] = []
    if not request.chat_id:
        violations.append(FieldViolation("chat_id", "required"))
    if not request.idempotency_key:
        violations.append(FieldViolation("idempotency_key", "required"))
    if not request.parts:
        violations.append(FieldViolation("parts", "at least one part is required"))
    for index, part in enumerate(request.parts):
        violations.extend(_part_violations(index, part))
    if request.instance_name == "":
        violations.append(FieldViolation("instance_name", "required"))
    if violations:
        raise InvalidArgumentError("invalid send request", violations=violations)
