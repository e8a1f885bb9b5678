"""Small builders of spans for the tracing tests."""

from __future__ import annotations

import itertools
from typing import Any

from servicekit import trace_attributes as ta
from services.tracing.core import SpanRecord

T0 = 1_700_000_000_000_000_000
"""A fixed epoch in nanoseconds (2023-11-14)."""
MS = 1_000_000

_ids = itertools.count(1)


def span(
    trace_id: str,
    name: str,
    start_ms: int,
    end_ms: int,
    *,
    parent: str = "",
    span_id: str = "",
    base_ns: int = T0,
    **attributes: Any,
) -> SpanRecord:
    """A span of `trace_id` from start_ms to end_ms after `base_ns`; keyword attributes use short names
    (status=..., step=..., instance_name=...) mapped to the omni.* attribute names."""
    names = {
        "status": ta.STATUS,
        "error_message": ta.ERROR_MESSAGE,
        "step": ta.STEP,
        "instance_name": ta.INSTANCE_NAME,
        "source_channel": ta.SOURCE_CHANNEL,
        "source_user_id": ta.SOURCE_USER_ID,
        "session_id": ta.SESSION_ID,
        "message_id": ta.MESSAGE_ID,
        "channel_message_id": ta.CHANNEL_MESSAGE_ID,
        "incoming": ta.PAYLOAD_INCOMING,
        "agent_request": ta.PAYLOAD_AGENT_REQUEST,
        "agent_response": ta.PAYLOAD_AGENT_RESPONSE,
        "outgoing": ta.PAYLOAD_OUTGOING,
    }
    return SpanRecord(
        trace_id=trace_id,
        span_id=span_id or f"{next(_ids):016x}",
        parent_span_id=parent,
        name=name,
        start_ns=base_ns + start_ms * MS,
        end_ns=base_ns + end_ms * MS,
        service_name="omni-test",
        attributes={names.get(key, key): value for key, value in attributes.items()},
    )


def message_spans(trace_id: str, *, base_ns: int = T0, instance: str = "acme", user: str = "5511") -> list[SpanRecord]:
    """The spans of one message handled end to end: accept → route (agent call, channel send) → sent."""
    accept = span(
        trace_id,
        "ingress.accept",
        0,
        5,
        base_ns=base_ns,
        status="processing",
        instance_name=instance,
        source_channel="whatsapp",
        source_user_id=user,
        message_id=f"m-{trace_id[:6]}",
        channel_message_id="WA1",
        incoming='{"text": "hi"}',
    )
    route = span(
        trace_id,
        "router.route",
        10,
        300,
        base_ns=base_ns,
        parent=accept.span_id,
        status="sent",
        session_id="sess-1",
        agent_request='{"message": "hi"}',
        agent_response='{"text": "hello"}',
        outgoing='{"text": "hello"}',
    )
    agent = span(trace_id, "agent.call", 20, 220, base_ns=base_ns, parent=route.span_id, step="agent_call")
    send = span(trace_id, "channels.send", 230, 290, base_ns=base_ns, parent=route.span_id, step="channel_send")
    return [accept, route, agent, send]
