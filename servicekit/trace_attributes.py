"""Span attribute names that carry the message trace. Services set them; the tracing service derives the trace
JSON of the public contract from them. Changing a name here changes the contract between the two."""

from __future__ import annotations

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
PAYLOAD_INCOMING = "omni.payload.incoming"
PAYLOAD_AGENT_REQUEST = "omni.payload.agent_request"
PAYLOAD_AGENT_RESPONSE = "omni.payload.agent_response"
PAYLOAD_OUTGOING = "omni.payload.outgoing"
STEP = "omni.step"
"""What a span measures; "agent_call" spans make up agent_duration_ms."""

STEP_AGENT_CALL = "agent_call"
STEP_CHANNEL_SEND = "channel_send"

STATUS_PROCESSING = "processing"
STATUS_SENT = "sent"
STATUS_ERROR = "error"
STATUS_BLOCKED = "blocked"
STATUS_IGNORED = "ignored"
TERMINAL_STATUSES = frozenset({STATUS_SENT, STATUS_ERROR, STATUS_BLOCKED, STATUS_IGNORED})
