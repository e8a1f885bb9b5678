"""Span attribute names that carry the message trace. Services set them; the tracing service derives the trace
JSON of the public contract from them. Changing a name here changes the contract between the two."""

from __future__ import annotations

from collections.abc import Iterable

INSTANCE_NAME = "omni.instance_name"
MESSAGE_ID = "omni.message_id"
CHANNEL_MESSAGE_ID = "omni.channel_message_id"
SOURCE_CHANNEL = "omni.source_channel"
SOURCE_USER_ID = "omni.source_user_id"
SESSION_ID = "omni.session_id"
USER_ID = "omni.user_id"
ATTEMPT = "omni.attempt"
STATUS = "omni.status"
"""The trace status this span decided: processing, sent, error, blocked or ignored."""
ERROR_MESSAGE = "omni.error_message"
ACCESS_RULE_ID = "omni.access.rule_id"
"""On a blocked message's route span: the id of the access rule that blocked it (absent when the allowlist mode
blocked it without a rule)."""
ACCESS_RULE_PATTERN = "omni.access.rule_pattern"
PAYLOAD_INCOMING = "omni.payload.incoming"
PAYLOAD_AGENT_REQUEST = "omni.payload.agent_request"
PAYLOAD_AGENT_RESPONSE = "omni.payload.agent_response"
PAYLOAD_OUTGOING = "omni.payload.outgoing"
ATTEMPT_ERROR = "omni.attempt_error"
"""Why a delivery attempt failed (agent status, timeout, channel down) while the message will be retried: the trace
shows the latest one as its error at once, before any final status."""
NEXT_RETRY_AT = "omni.next_retry_at"
"""Epoch seconds of the inbox's next delivery attempt after a failed one (set by ingress's dispatch span)."""
MESSAGE_TYPE = "omni.message_type"
"""The inbound message's type (text, image, audio, ...): a trace filter and an analytics dimension."""
HAS_MEDIA = "omni.has_media"
"""True when the inbound message carried a file."""
MESSAGE_TEXT = "omni.message_text"
"""The inbound message's text, capped at MESSAGE_TEXT_MAX_CHARS: what the trace text search looks in."""
MESSAGE_TEXT_MAX_CHARS = 1_000
ERROR_STAGE = "omni.error_stage"
"""On a span ending a trace in error: the step that failed (agent, channel). Without it the stage is the service."""
STEP = "omni.step"
"""What a span measures; "agent_call" spans make up agent_duration_ms."""

SENT_CHANNEL_MESSAGE_IDS = "omni.channel_message_ids"
"""On a channel send span: the channel message ids of the parts it sent (receipts name these ids)."""
REFERS_TO_CHANNEL_MESSAGE_ID = "omni.refers_to.channel_message_id"
"""On a message event span (a delivery receipt, an edit, a deletion): the channel message id the event is about. The
tracing service files such a span under the trace of that message (an inbound one, or one whose send listed it),
not under the trace it was recorded in."""
MESSAGE_EVENT_KEY = "omni.message_event.key"
"""What makes a message event unique ("receipt:<id>:read"): a repeat of the same event (the channel posting a webhook
twice) is kept once."""
MESSAGE_EVENT_FROM_ME = "omni.message_event.from_me"
"""True when the event is about a message the instance's own account sent (receipts of the hub's replies)."""
MESSAGE_EVENT_TEXT = "omni.message_event.text"
"""The new text of an edit (a capped snapshot)."""
RECEIPT_STATUS = "omni.receipt.status"
"""The delivery status a receipt reports: one of DELIVERY_STATUSES, or "failed"."""

DELIVERY_STATUSES = ("pending", "sent", "delivered", "read", "played")
"""Delivery statuses from least to most advanced; a message's delivery status is the most advanced receipt seen."""
DELIVERY_FAILED = "failed"

STEP_AGENT_CALL = "agent_call"
STEP_CHANNEL_SEND = "channel_send"

STATUS_PROCESSING = "processing"
STATUS_SENT = "sent"
STATUS_ERROR = "error"
STATUS_BLOCKED = "blocked"
STATUS_IGNORED = "ignored"
TERMINAL_STATUSES = frozenset({STATUS_SENT, STATUS_ERROR, STATUS_BLOCKED, STATUS_IGNORED})

MEDIA_NOTE = "omni.media.note"
"""Why a received file's bytes are not with the message (over the size cap, undecodable, not fetched): set by
ingress's accept span and the router's media.fetch span. The agent still gets the media entry without bytes."""
MEDIA_BLOB_COUNT = "omni.media.blob_count"
"""How many received files ingress moved to its media store."""
MEDIA_RESOLVED_COUNT = "omni.media.resolved_count"
"""How many media items the router handed to the agent with their bytes."""
STEP_MEDIA_FETCH = "media_fetch"
STEP_TRANSCRIPTION = "transcription"
TRANSCRIPTION_OUTCOME = "omni.transcription.outcome"
"""ok, failed or skipped."""
TRANSCRIPTION_ERROR = "omni.transcription.error"
"""Why a transcription failed (timeout, HTTP status, bad JSON, unreachable)."""
TRANSCRIPTION_DURATION_MS = "omni.transcription.duration_ms"
TRANSCRIPTION_MODEL = "omni.transcription.model"


def most_advanced_delivery(statuses: Iterable[str]) -> str:
    """The most advanced of some receipt statuses ("read" beats "delivered"); "failed" only when nothing went
    further; "" for none. Receipts arrive in any order, so the latest to arrive is not the answer."""
    seen = set(statuses)
    for status in reversed(DELIVERY_STATUSES):
        if status in seen:
            return status
    return DELIVERY_FAILED if DELIVERY_FAILED in seen else ""
