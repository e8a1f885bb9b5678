"""Finding a part whose send outcome is unknown among the messages Evolution already holds.

When a request timed out or the process died after it left, Evolution may or may not have sent the message.
Its own message store (findMessages, fromMe=true) is the ground truth: a record in the same chat, sent since
shortly before our try, with the same text or caption and a key id no other part already owns, is our message.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from services.channels.core.evolution import media_type
from services.channels.core.models import OutboundPart

_MEDIA_MESSAGE_KEYS = ("imageMessage", "videoMessage", "audioMessage", "documentMessage", "stickerMessage")


def remote_jid(chat_id: str) -> str:
    """The JID Evolution stores a chat under: a bare phone number becomes <digits>@s.whatsapp.net."""
    if "@" in chat_id:
        return chat_id
    return f"{re.sub(r'[^0-9]', '', chat_id)}@s.whatsapp.net"


def _timestamp(value: Any) -> float | None:
    """messageTimestamp as seconds: a number, a numeric string or a protobuf Long {low, high}."""
    if isinstance(value, dict):
        low, high = value.get("low"), value.get("high", 0)
        if isinstance(low, int) and isinstance(high, int):
            return float((high << 32) | (low & 0xFFFFFFFF))
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _text_of(message: dict[str, Any]) -> str | None:
    if isinstance(message.get("conversation"), str):
        return str(message["conversation"])
    extended = message.get("extendedTextMessage")
    if isinstance(extended, dict) and isinstance(extended.get("text"), str):
        return str(extended["text"])
    return None


def _media_of(message: dict[str, Any]) -> tuple[str, str] | None:
    """(media kind, caption) of a media message, unwrapping documentWithCaptionMessage."""
    wrapped = message.get("documentWithCaptionMessage")
    if isinstance(wrapped, dict) and isinstance(wrapped.get("message"), dict):
        message = wrapped["message"]
    for key in _MEDIA_MESSAGE_KEYS:
        body = message.get(key)
        if isinstance(body, dict):
            return key.removesuffix("Message"), str(body.get("caption") or "")
    return None


def _degrees(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _structured_matches(message: dict[str, Any], part: OutboundPart) -> bool:
    """A reaction to the same message with the same emoji, a pin at the same place, or cards of the same people."""
    if part.reaction is not None:
        reaction = message.get("reactionMessage")
        if not isinstance(reaction, dict) or not isinstance(reaction.get("key"), dict):
            return False
        return (
            reaction["key"].get("id") == part.reaction.message_id
            and str(reaction.get("text") or "") == part.reaction.emoji
        )
    if part.location is not None:
        pin = message.get("locationMessage")
        if not isinstance(pin, dict):
            return False
        latitude, longitude = _degrees(pin.get("degreesLatitude")), _degrees(pin.get("degreesLongitude"))
        return (
            latitude is not None
            and longitude is not None
            and abs(latitude - part.location.latitude) < 1e-6
            and abs(longitude - part.location.longitude) < 1e-6
        )
    single = message.get("contactMessage")
    cards = [single] if isinstance(single, dict) else []
    several = message.get("contactsArrayMessage")
    if isinstance(several, dict) and isinstance(several.get("contacts"), list):
        cards = [card for card in several["contacts"] if isinstance(card, dict)]
    names = [str(card.get("displayName") or "") for card in cards]
    return names == [card.full_name for card in part.contacts]


def matches(record: dict[str, Any], part: OutboundPart) -> bool:
    """True when the stored message has the content `part` would have produced."""
    message = record.get("message")
    if not isinstance(message, dict):
        return False
    if part.reaction is not None or part.location is not None or part.contacts:
        return _structured_matches(message, part)
    if part.media is None:
        text = _text_of(message)
        return text is not None and text.strip() == part.text.strip()
    found = _media_of(message)
    if found is None:
        return False
    kind, caption = found
    expected_kind = "sticker" if part.media.type == "sticker" else media_type(part.media)
    if part.text and expected_kind not in ("sticker", "audio"):
        return caption.strip() == part.text.strip()
    return kind == expected_kind


def find_sent(records: Iterable[dict[str, Any]], part: OutboundPart, *, since: float, exclude: set[str]) -> str | None:
    """The key id of the earliest own message since `since` matching `part` and not in `exclude`."""
    candidates: list[tuple[float, str]] = []
    for record in records:
        key = record.get("key")
        if not isinstance(key, dict) or key.get("fromMe") is not True:
            continue
        key_id = str(key.get("id") or "")
        if not key_id or key_id in exclude:
            continue
        stamp = _timestamp(record.get("messageTimestamp"))
        if stamp is not None and stamp < since:
            continue
        if matches(record, part):
            candidates.append((stamp if stamp is not None else float("inf"), key_id))
    return min(candidates)[1] if candidates else None
