"""Message events (delivery receipts, edits, deletions) filed under the trace of the message they are about.

A receipt is recorded by ingress when the channel reports it, long after (and in another trace than) the message it
refers to; the reply's trace is where it belongs. Two facts join them, both carried by spans:
- a message's trace names its channel message ids: the inbound one (`omni.channel_message_id` on spans that decide
  the trace's status) and the ones its sends produced (`omni.channel_message_ids` on channel send spans). These are
  the *links* (instance, channel message id) → trace id;
- an event span names the message it is about (`omni.refers_to.channel_message_id`).

An event whose message is linked already is stored as a span of that trace at once; one that arrives first (a
receipt can beat the send span, which the channels service exports on its own schedule) waits as a *pending event*
and is filed when the link arrives. Filed spans join the trace's span list without changing its status, duration or
payloads: a read receipt an hour later does not make the message's handling an hour long.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from servicekit import trace_attributes as attrs
from services.tracing.core.models import SpanRecord

Link = tuple[str, str]
"""(instance name, channel message id)."""


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


@dataclass(frozen=True, slots=True)
class MessageEvent:
    """An event span and the message it is about."""

    link: Link
    key: str
    """`event_key` of the span: unique per instance."""
    span: SpanRecord


def message_event(span: SpanRecord) -> MessageEvent | None:
    """The message event `span` records, or None when it is an ordinary span."""
    target = event_target(span)
    return MessageEvent(target, event_key(span), span) if target is not None else None


def event_target(span: SpanRecord) -> Link | None:
    """The message an event span is about, or None when the span is not a message event."""
    refers = _text(span.attributes.get(attrs.REFERS_TO_CHANNEL_MESSAGE_ID))
    instance = _text(span.attributes.get(attrs.INSTANCE_NAME))
    return (instance, refers) if refers and instance else None


def event_key(span: SpanRecord) -> str:
    """What identifies the event (a repeat of it is dropped); the span id when the sender gave no key."""
    return _text(span.attributes.get(attrs.MESSAGE_EVENT_KEY)) or f"span:{span.span_id}"


def links_of(span: SpanRecord) -> list[Link]:
    """The channel message ids `span` ties to its trace."""
    values = span.attributes
    instance = _text(values.get(attrs.INSTANCE_NAME))
    if not instance:
        return []
    found: list[Link] = []
    inbound = _text(values.get(attrs.CHANNEL_MESSAGE_ID))
    # Only a span that decides the trace's status names the trace's own message: a repeated webhook's accept span
    # carries the same id in a trace of its own, and must not win the link.
    if inbound and _text(values.get(attrs.STATUS)):
        found.append((instance, inbound))
    sent = values.get(attrs.SENT_CHANNEL_MESSAGE_IDS)
    if isinstance(sent, list | tuple):
        found.extend((instance, item.strip()) for item in sent if isinstance(item, str) and item.strip())
    return found


def links_of_spans(spans: Iterable[SpanRecord]) -> dict[Link, str]:
    """Every link the spans carry → its trace id (the first span of a batch naming a link wins)."""
    links: dict[Link, str] = {}
    for span in spans:
        for link in links_of(span):
            links.setdefault(link, span.trace_id)
    return links


def filed_under(span: SpanRecord, trace_id: str) -> SpanRecord:
    """The event span as a span of the message's trace: a root there (its parent lives in another trace)."""
    return dataclasses.replace(span, trace_id=trace_id, parent_span_id="")


def span_to_json(span: SpanRecord) -> str:
    """A pending event span, kept as text until its message's trace is known."""
    return orjson.dumps(dataclasses.asdict(span), default=str).decode()


def span_from_json(text: str) -> SpanRecord | None:
    """The span `span_to_json` wrote; None for text that is not one (never fails a batch)."""
    try:
        data = orjson.loads(text)
        attributes = data.get("attributes")
        return SpanRecord(
            trace_id=str(data["trace_id"]),
            span_id=str(data["span_id"]),
            parent_span_id=str(data.get("parent_span_id") or ""),
            name=str(data["name"]),
            start_ns=int(data["start_ns"]),
            end_ns=int(data["end_ns"]),
            status=str(data.get("status") or "unset"),
            service_name=str(data.get("service_name") or ""),
            attributes=attributes if isinstance(attributes, dict) else {},
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        return None
