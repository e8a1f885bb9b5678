"""RouteMessage: the brain. One inbound message in, at most one agent call and one reply out, idempotently.

Ingress delivers at least once, so every step is written down in the `routes` record before the next one runs:
once the agent has answered, a retry reuses the stored answer instead of calling the agent again; once the reply
is sent, a retry returns the stored outcome. The channel send is keyed by the inbound message id, and channels
de-duplicates parts by key and index, so a send interrupted half-way is completed, never repeated.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import Any

from opentelemetry import trace

from servicekit import trace_attributes as attrs
from servicekit.errors import (
    DeadlineExceededError,
    FailedPreconditionError,
    FieldViolation,
    InvalidArgumentError,
    NotFoundError,
    OmniError,
    UnavailableError,
)
from servicekit.instances import Instance
from servicekit.messages import InboundMessage, OutboundPart
from servicekit.telemetry import payload_json
from services.router.core.access import Decision
from services.router.core.agent_client import AgentClient, AgentPermanentError, AgentTransientError
from services.router.core.agent_request import build_agent_request, media_parts
from services.router.core.identity import person_of, session_name_of
from services.router.core.keyed_lock import KeyedLock
from services.router.core.media_resolver import MediaResolver
from services.router.core.models import OutgoingMessage, RouteRecord, RouteResult
from services.router.core.ports import (
    AccessChecker,
    ChannelSender,
    Clock,
    IdentityStore,
    InstanceStore,
    RouteStore,
)
from services.router.core.reply_splitter import split_reply
from services.router.core.transcription import Transcriber

log = logging.getLogger(__name__)

FALLBACK_KEY_SUFFIX = ":fallback"
BLOCKED_KEY_SUFFIX = ":blocked"


def agent_budget_spent(instance: Instance, attempt: int) -> bool:
    """Whether this attempt is the instance's last agent attempt (`agent_max_attempts`; 0 leaves the budget to the
    deployment's inbox retries, AUTOMAGIK_OMNI_INGRESS_MAX_ATTEMPTS)."""
    return 0 < instance.agent_max_attempts <= attempt


def _set_message_attributes(span: trace.Span, message: InboundMessage) -> None:
    """What the message is (type, media, capped text): the trace list filters and text search read these."""
    if message.message_type:
        span.set_attribute(attrs.MESSAGE_TYPE, message.message_type)
    span.set_attribute(attrs.HAS_MEDIA, bool(message.media))
    if message.text:
        span.set_attribute(attrs.MESSAGE_TEXT, message.text[: attrs.MESSAGE_TEXT_MAX_CHARS])


def returned_agent_ids(raw: dict[str, Any], record: RouteRecord) -> tuple[str, str] | None:
    """The (session id, user id) an agent's reply carries as its own, to send back on the session's next turn; None
    when it carries neither (or only echoes the hub's ids, which it gets anyway)."""
    session_id, user_id = raw.get("session_id"), raw.get("user_id")
    own_session = session_id if isinstance(session_id, str) and session_id != record.session_id else ""
    own_user = user_id if isinstance(user_id, str) and user_id != record.user_id else ""
    if not own_session and not own_user:
        return None
    return own_session[:256], own_user[:256]


class MessageRouter:
    """Handles inbound messages: identity, agent call, reply, outcome."""

    def __init__(
        self,
        *,
        instances: InstanceStore,
        identities: IdentityStore,
        routes: RouteStore,
        agent: AgentClient,
        channels: ChannelSender,
        clock: Clock = time.time,
        tracer: trace.Tracer | None = None,
        typing_delay: float = 1.0,
        media: MediaResolver | None = None,
        transcriber: Transcriber | None = None,
        access: AccessChecker | None = None,
    ) -> None:
        self._instances = instances
        self._identities = identities
        self._routes = routes
        self._agent = agent
        self._channels = channels
        self._clock = clock
        self._tracer = tracer or trace.get_tracer("omni.router")
        self._locks = KeyedLock()
        self._background: set[asyncio.Task[None]] = set()
        self._typing_delay = typing_delay
        self._media = media
        self._transcriber = transcriber
        self._access = access

    async def route(self, message: InboundMessage, *, attempt: int = 1, final_attempt: bool = False) -> RouteResult:
        """Handle `message`; raises `UnavailableError` when a later attempt with the same message may succeed."""
        missing = [
            FieldViolation(f"message.{name}", "is required")
            for name in ("id", "instance_name", "chat_id")
            if not getattr(message, name)
        ]
        if missing:
            raise InvalidArgumentError("message ids are missing", violations=missing)
        # Concurrent attempts on one message (a retry racing a slow first attempt) run one after the other.
        async with self._locks.hold(message.id):
            with self._tracer.start_as_current_span("router.route") as span:
                span.set_attribute(attrs.INSTANCE_NAME, message.instance_name)
                span.set_attribute(attrs.MESSAGE_ID, message.id)
                span.set_attribute(attrs.CHANNEL_MESSAGE_ID, message.channel_message_id)
                # Also on the accept span; repeated here so the trace summary is whole whichever service's spans
                # reach the tracing service first.
                span.set_attribute(attrs.SOURCE_CHANNEL, message.channel)
                span.set_attribute(attrs.SOURCE_USER_ID, message.sender.id)
                span.set_attribute(attrs.ATTEMPT, attempt)
                _set_message_attributes(span, message)
                try:
                    result = await self._route(message, final_attempt, span, attempt=attempt)
                except UnavailableError as exc:
                    # No omni.status: the message is still in flight and will be retried. The attempt error shows on
                    # the trace at once (the tracing service derives it), before the retry budget ends.
                    span.set_attribute("omni.retry_reason", exc.message)
                    span.set_attribute(attrs.ATTEMPT_ERROR, exc.message)
                    raise
                except OmniError as exc:
                    span.set_attribute(attrs.STATUS, attrs.STATUS_ERROR)
                    span.set_attribute(attrs.ERROR_MESSAGE, exc.message)
                    raise
                span.set_attribute(attrs.STATUS, result.outcome)
                if result.error_message:
                    span.set_attribute(attrs.ERROR_MESSAGE, result.error_message)
                return result

    async def _route(
        self, message: InboundMessage, final_attempt: bool, span: trace.Span, *, attempt: int = 1
    ) -> RouteResult:
        instance = await self._instances.get(message.instance_name)
        if instance is None:
            raise NotFoundError(f"instance {message.instance_name!r} not found", reason="INSTANCE_NOT_FOUND")
        if not instance.is_active:
            return RouteResult("ignored", "instance inactive")
        if message.channel != instance.channel:
            message = dataclasses.replace(message, channel=instance.channel)
        record = await self._record(message, instance.id, instance.session_id_prefix)
        span.set_attribute(attrs.USER_ID, record.user_id)
        span.set_attribute(attrs.SESSION_ID, record.session_id)
        if record.outcome is not None:
            return self._result(record, record.outcome, record.error_message, list(record.sent_message_ids))
        if record.agent_reply is None and self._access is not None:
            decision = self._access.evaluate(instance, message)
            if not decision.allowed:
                return await self._block(instance, message, record, decision, span)
        reply = record.agent_reply
        if reply is None:
            reply = await self._ask_agent(instance, message, record, final_attempt, span, attempt=attempt)
        if "error" in reply:
            span.set_attribute(attrs.ERROR_STAGE, "agent")
            if instance.fallback_text:
                await self._send_fallback(instance, message, strict=True)
            return await self._finish(record, "error", str(reply["error"]), [])
        outgoing = self._reply_message(instance, message, reply)
        if outgoing is None:
            return await self._finish(record, "sent", "", [])
        span.set_attribute(attrs.PAYLOAD_OUTGOING, payload_json(outgoing.snapshot()))
        try:
            sent = await self._channels.send(outgoing)
        except FailedPreconditionError as exc:
            span.set_attribute(attrs.ERROR_STAGE, "channel")
            return await self._finish(record, "error", f"channel rejected the reply: {exc.message}", [])
        except UnavailableError as exc:
            raise UnavailableError(f"channel unavailable: {exc.message}", retry_after=exc.retry_after) from None
        except DeadlineExceededError as exc:
            raise UnavailableError(f"channel timed out: {exc.message}") from None
        except NotFoundError as exc:
            span.set_attribute(attrs.ERROR_STAGE, "channel")
            return await self._finish(record, "error", f"channel does not know the instance: {exc.message}", [])
        return await self._finish(record, "sent", "", sent)

    async def _block(
        self, instance: Instance, message: InboundMessage, record: RouteRecord, decision: Decision, span: trace.Span
    ) -> RouteResult:
        """End a message the access rules refuse: no agent call, the instance's `blocked_text` (if any) as the only
        answer, and the outcome stored so a redelivery is not evaluated (or answered) again."""
        if decision.rule is not None:
            span.set_attribute(attrs.ACCESS_RULE_ID, decision.rule.id)
            span.set_attribute(attrs.ACCESS_RULE_PATTERN, decision.rule.pattern)
        sent: list[str] = []
        if instance.blocked_text:
            outgoing = OutgoingMessage(
                instance_name=instance.name,
                chat_id=message.chat_id,
                parts=(OutboundPart(text=instance.blocked_text),),
                idempotency_key=f"{message.id}{BLOCKED_KEY_SUFFIX}",
                thread_id=message.thread_id,
            )
            span.set_attribute(attrs.PAYLOAD_OUTGOING, payload_json(outgoing.snapshot()))
            try:
                sent = await self._channels.send(outgoing)
            except (UnavailableError, DeadlineExceededError) as exc:
                raise UnavailableError(f"channel unavailable for the blocked text: {exc.message}") from None
            except OmniError as exc:
                log.warning("blocked text for message %s refused: %s", message.id, exc.message)
        return await self._finish(record, "blocked", decision.reason, sent)

    async def _record(self, message: InboundMessage, instance_id: str, session_prefix: str = "") -> RouteRecord:
        """The idempotency record of `message`, created (with user and session) on the first attempt.

        User and session ids derive from the instance's immutable id, so a deleted and recreated instance of the same
        name starts with new ones, and no router replica's memory of the old ones applies to it."""
        # Claim first: a new message (the common case) costs one INSERT; only a redelivery reads the record back.
        # User and session ids come from memory after a person's first message, so resolving them first is cheap.
        now = self._clock()
        person = dataclasses.replace(person_of(message), instance_id=instance_id)
        user_id = await self._identities.resolve_user(person, now)
        session_id = await self._identities.resolve_session(
            message.instance_name,
            message.channel,
            message.chat_id,
            session_prefix + session_name_of(message),
            user_id,
            now,
            instance_id=instance_id,
        )
        record = RouteRecord(message.id, message.instance_name, user_id, session_id)
        if await self._routes.claim(record, now):
            await self._identities.record_message(user_id, session_id, person, now)
            return record
        await self._routes.count_attempt(message.id, now)
        return await self._routes.get(message.id) or record

    async def _ask_agent(
        self,
        instance: Instance,
        message: InboundMessage,
        record: RouteRecord,
        final_attempt: bool,
        span: trace.Span,
        *,
        attempt: int = 1,
    ) -> dict[str, Any]:
        """Call the agent and store its answer (or its permanent failure); transient failures raise."""
        if not instance.agent_api_url:
            reply: dict[str, Any] = {"error": "instance has no agent_api_url"}
            return await self._routes.store_reply(message.id, reply, self._clock())
        typing = self._composing(instance, message)
        try:
            message = await self._prepare_media(instance, message)
        except BaseException:
            typing.cancel()
            raise
        agent_ids = await self._identities.agent_ids(record.session_id)
        body = build_agent_request(
            instance,
            message,
            user_id=record.user_id,
            session_id=record.session_id,
            session_name=instance.session_id_prefix + session_name_of(message),
            agent_session_id=agent_ids[0],
            agent_user_id=agent_ids[1],
        )
        span.set_attribute(attrs.PAYLOAD_AGENT_REQUEST, payload_json(body))
        try:
            answer = await self._agent.chat(
                instance.agent_api_url,
                instance.agent_api_key,
                body,
                budget=float(instance.agent_timeout_seconds),
                signing_secret=instance.agent_signing_secret,
                webhook_id=f"msg_{message.id}" if message.id else "",
            )
        except AgentTransientError as exc:
            typing.cancel()
            if agent_budget_spent(instance, attempt):
                # The instance's own retry budget (agent_max_attempts) ends here, before the deployment's: a final
                # error (fallback text, trace `error`) instead of UNAVAILABLE, so ingress stops retrying.
                span.set_attribute(attrs.PAYLOAD_AGENT_RESPONSE, payload_json({"error": exc.message}))
                reply = {"error": f"agent failed after {attempt} attempts: {exc.message}"}
                return await self._routes.store_reply(message.id, reply, self._clock())
            if final_attempt and instance.fallback_text:
                await self._send_fallback(instance, message, strict=False)
            raise UnavailableError(f"agent unreachable: {exc.message}") from None
        except AgentPermanentError as exc:
            typing.cancel()
            span.set_attribute(attrs.PAYLOAD_AGENT_RESPONSE, payload_json({"error": exc.message, "status": exc.status}))
            reply = {"error": exc.message}
        else:
            typing.cancel()
            span.set_attribute(attrs.PAYLOAD_AGENT_RESPONSE, payload_json(answer.raw))
            reply = {"text": answer.text, "media": answer.media, "actions": answer.actions}
            returned = returned_agent_ids(answer.raw, record)
            if returned is not None and returned != agent_ids:
                await self._identities.store_agent_ids(record.session_id, *returned)
        return await self._routes.store_reply(message.id, reply, self._clock())

    async def _prepare_media(self, instance: Instance, message: InboundMessage) -> InboundMessage:
        """The message as the agent gets it: its files' bytes resolved (`media_resolver`), then a voice note
        transcribed into its text (`transcription`). Neither fails the turn; their spans say what went wrong."""
        if self._media is not None:
            message = await self._media.resolve(message)
        if self._transcriber is not None:
            message = await self._transcriber.transcribe_message(instance, message)
        return message

    @staticmethod
    def _reply_message(instance: Instance, message: InboundMessage, reply: dict[str, Any]) -> OutgoingMessage | None:
        """The parts of the reply (split text, then media), or None when there is nothing to send."""
        texts = split_reply(
            str(reply.get("text") or ""), limit=instance.traits.text_limit, auto_split=instance.enable_auto_split
        )
        parts = [OutboundPart(text=t) for t in texts] + media_parts(list(reply.get("media") or []))
        if not parts:
            return None
        return OutgoingMessage(
            instance_name=instance.name,
            chat_id=message.chat_id,
            parts=tuple(parts),
            idempotency_key=message.id,
            thread_id=message.thread_id,
            quoted_message_id=message.channel_message_id
            if instance.traits.reply_quotes_message or (message.is_group and instance.traits.reply_quotes_in_groups)
            else "",
        )

    async def _send_fallback(self, instance: Instance, message: InboundMessage, *, strict: bool) -> None:
        """Send the instance's fallback text; with `strict`, a transient channel failure is raised for a retry."""
        outgoing = OutgoingMessage(
            instance_name=instance.name,
            chat_id=message.chat_id,
            parts=(OutboundPart(text=instance.fallback_text),),
            idempotency_key=f"{message.id}{FALLBACK_KEY_SUFFIX}",
            thread_id=message.thread_id,
        )
        trace.get_current_span().set_attribute(attrs.PAYLOAD_OUTGOING, payload_json(outgoing.snapshot()))
        try:
            await self._channels.send(outgoing)
        except (UnavailableError, DeadlineExceededError) as exc:
            if strict:
                raise UnavailableError(f"channel unavailable for the fallback text: {exc.message}") from None
            log.warning("fallback text for message %s not sent: %s", message.id, exc.message)
        except OmniError as exc:
            log.warning("fallback text for message %s refused: %s", message.id, exc.message)

    def _composing(self, instance: Instance, message: InboundMessage) -> asyncio.Task[None]:
        """Show "typing..." once the agent has taken `typing_delay` seconds (and again every refresh period the
        channel declares, as Discord's indicator fades after ten seconds), without waiting for it: it must never
        delay or fail the reply. The caller cancels the returned task when the agent answers."""

        refresh = instance.traits.typing_refresh_seconds

        async def after_delay() -> None:
            if self._typing_delay < 0:
                return
            await asyncio.sleep(self._typing_delay)
            while True:
                await self._channels.composing(instance.name, message.chat_id)
                if refresh <= 0:
                    return
                await asyncio.sleep(refresh)

        task = asyncio.create_task(after_delay())
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def _finish(self, record: RouteRecord, outcome: str, error: str, sent: list[str]) -> RouteResult:
        await self._routes.finish(record.message_id, outcome, error, sent, self._clock())
        return self._result(record, outcome, error, sent)

    @staticmethod
    def _result(record: RouteRecord, outcome: str, error: str, sent: list[str]) -> RouteResult:
        return RouteResult(outcome, error, record.user_id, record.session_id, tuple(sent))

    async def aclose(self) -> None:
        """Wait for the background typing indicators still in flight."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
