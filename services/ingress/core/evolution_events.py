"""Evolution events other than messages (evolution/CONTRACT.md §1.2, §3): receipts, edits and deletions become
message events (`message_events`); everything else is acknowledged and ignored with a reason saying why.

Pure like the parser: no I/O, never raises on an odd payload. Receipts, deletes and edits keep whatever JID Baileys
produced (often a LID) and, for edits, the author's perspective (`fromMe` true for a contact's edit), so only the
message id is trusted to find the message; the rest is shown as is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from servicekit import trace_attributes as attrs
from services.ingress.core.evolution_values import dict_of, str_of, to_int
from services.ingress.core.message_events import (
    MESSAGE_DELETED,
    MESSAGE_EDITED,
    RECEIPT,
    MessageEvent,
    message_events_received,
)
from services.ingress.core.receivers.base import Received

TextReader = Callable[[dict[str, Any]], str]
"""The parser's text reader of a WhatsApp `Message` (passed in: the parser imports this module)."""

MESSAGES_UPDATE = "messages.update"
MESSAGES_DELETE = "messages.delete"
MESSAGES_EDITED = "messages.edited"
MESSAGE_EVENTS = frozenset({MESSAGES_UPDATE, MESSAGES_DELETE, MESSAGES_EDITED})

REASON_NOT_A_MESSAGE = "not_a_message"
REASON_UNKNOWN_EVENT = "unknown_event"
REASON_HISTORY_SYNC = "history_sync"
REASON_OWN_EDIT = "own_edit"
REASON_MESSAGE_CHANGED = "message_changed"
"""A `messages.update` that is not a receipt: an edit or delete as ≤2.3.6 reported it (`status:"DELETED"`), or a
poll vote. The same change also arrives as `messages.edited`/`messages.delete`, which are recorded."""
REASON_MALFORMED = "malformed"

_IGNORED_REASONS = {
    "messages.set": REASON_HISTORY_SYNC,
    "messaging-history.set": REASON_HISTORY_SYNC,
    "send.message.update": REASON_OWN_EDIT,
}
"""Events whose reason says more than "not a message"; the other known events are `not_a_message`."""

RECEIPT_STATUSES: dict[str, str] = {
    "ERROR": attrs.DELIVERY_FAILED,
    "PENDING": "pending",
    "SERVER_ACK": "sent",
    "DELIVERY_ACK": "delivered",
    "READ": "read",
    "PLAYED": "played",
}
"""Evolution's `renderStatus` names → delivery statuses. ≤2.3.5 may send the protobuf numbers, in this order."""
_STATUS_BY_NUMBER = dict(enumerate(RECEIPT_STATUSES.values()))

_REVOKE_TYPES = ("REVOKE", 0)
_EDIT_TYPES = ("MESSAGE_EDIT", 14)


def ignored_event(event: str, known: bool) -> Received:
    """The answer to an event that carries nothing to record, with the reason."""
    reason = _IGNORED_REASONS.get(event, REASON_NOT_A_MESSAGE if known else REASON_UNKNOWN_EVENT)
    return Received(event=event, kind="ignored", reason=reason)


def parse_message_event(event: str, data: object, extract_text: TextReader) -> Received:
    """`messages.update`, `messages.delete` or `messages.edited` (one object or a list) → message events, or an
    ignored result with the reason."""
    items = data if isinstance(data, list) else [data]
    events: list[MessageEvent] = []
    reason = REASON_MALFORMED
    for item in items:
        if not isinstance(item, dict):
            continue
        parsed = _one(event, item, extract_text)
        if isinstance(parsed, MessageEvent):
            events.append(parsed)
        else:
            reason = parsed
    if not events:
        return Received(event=event, kind="ignored", reason=reason)
    return message_events_received(event, events)


def _one(event: str, data: dict[str, Any], extract_text: TextReader) -> MessageEvent | str:
    """The event `data` describes, or the reason it describes none."""
    if event == MESSAGES_UPDATE:
        return _receipt(data)
    if event == MESSAGES_DELETE:
        key = dict_of(data.get("key")) or data  # 2.x sends the key itself; be lenient with a wrapped one
        key_id = str_of(key.get("id"))
        if not key_id:
            return REASON_MALFORMED
        return MessageEvent(MESSAGE_DELETED, key_id, str_of(key.get("remoteJid")), from_me=key.get("fromMe") is True)
    return _edit(data, extract_text)


def _receipt(data: dict[str, Any]) -> MessageEvent | str:
    key = dict_of(data.get("key"))
    # 2.x: keyId (messageId is Evolution's row id); v1.8: the key spread flat, so `id`.
    key_id = str_of(data.get("keyId")) or str_of(key.get("id")) or str_of(data.get("id"))
    if not key_id:
        return REASON_MALFORMED
    poll = data.get("pollUpdates")
    if isinstance(poll, list) and poll:
        return REASON_MESSAGE_CHANGED
    raw_status = data.get("status")
    if isinstance(raw_status, int) and not isinstance(raw_status, bool):
        status = _STATUS_BY_NUMBER.get(raw_status, "")
    else:
        status = RECEIPT_STATUSES.get(str_of(raw_status).strip().upper(), "")
    if not status:
        return REASON_MESSAGE_CHANGED
    from_me = data.get("fromMe", key.get("fromMe")) is True
    chat_id = str_of(data.get("remoteJid")) or str_of(key.get("remoteJid"))
    return MessageEvent(RECEIPT, key_id, chat_id, status=status, from_me=from_me)


def _edit(data: dict[str, Any], extract_text: TextReader) -> MessageEvent | str:
    key = dict_of(data.get("key"))
    key_id = str_of(key.get("id"))
    if not key_id:
        return REASON_MALFORMED
    kind = data.get("type")
    edited = dict_of(data.get("editedMessage"))
    chat_id = str_of(key.get("remoteJid"))
    if kind in _REVOKE_TYPES:
        # `key` is the author's perspective here: its fromMe says nothing about whose message it was.
        return MessageEvent(MESSAGE_DELETED, key_id, chat_id)
    if kind in _EDIT_TYPES or (kind is None and edited):
        text = extract_text(edited) if edited else ""
        version = str_of(data.get("timestampMs")) or str(to_int(data.get("timestampMs")) or "")
        return MessageEvent(MESSAGE_EDITED, key_id, chat_id, text=text, version=version)
    return REASON_NOT_A_MESSAGE  # EPHEMERAL_SETTING and the other protocol messages
