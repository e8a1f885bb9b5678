"""Evolution API webhook envelopes → canonical messages (evolution/CONTRACT.md §1-§3, §6).

A pure module: no I/O, no clock. Deployed Evolution servers span v1.8 to 2.4.0-rc, so every field is read
defensively (a wrong type is treated as absent) and nothing here raises on an odd payload: the worst outcome is
an `ignored` result with the reason "malformed".

Only `messages.upsert` produces a message to handle. `send.message` (our own API sends) yields an own-send
record so that a later upsert echo of the same `key.id` is recognised as a duplicate. Every other event is
ignored with a reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from servicekit.channels import Channel
from servicekit.messages import InboundMessage, Media, QuotedMessage, Sender
from services.ingress.core.evolution_events import MESSAGE_EVENTS, ignored_event, parse_message_event
from services.ingress.core.evolution_values import dict_of, str_of, to_int
from services.ingress.core.receivers.base import Received

MESSAGES_UPSERT = "messages.upsert"
SEND_MESSAGE = "send.message"

KNOWN_EVENTS = (
    "application.startup",
    "call",
    "chats.delete",
    "chats.set",
    "chats.update",
    "chats.upsert",
    "connection.update",
    "contacts.set",
    "contacts.update",
    "contacts.upsert",
    "group-participants.update",
    "groups.update",
    "groups.upsert",
    "instance.create",
    "instance.delete",
    "labels.association",
    "labels.edit",
    "logout.instance",
    "messages.delete",
    "messages.edited",
    "messages.set",
    "messages.update",
    "messages.upsert",
    "messaging-history.set",
    "presence.update",
    "qrcode.updated",
    "remove.instance",
    "send.message",
    "send.message.update",
    "status.instance",
    "typebot.change-status",
    "typebot.start",
)
"""The `Events` enum values of Evolution (src/api/types/wa.types.ts), the spelling the envelope uses."""

_CANONICAL = {name.replace("-", ".").replace("_", "."): name for name in KNOWN_EVENTS}

REASON_FROM_ME = "from_me"
REASON_BROADCAST = "broadcast"
REASON_NEWSLETTER = "newsletter"
REASON_NO_CONTENT = "no_content"
REASON_MALFORMED = "malformed"
REASON_OWN_SEND = "own_send"
REASON_NOT_A_MESSAGE = "not_a_message"
REASON_NO_EVENT = "no_event"
CONNECTION_UPDATE = "connection.update"
QRCODE_UPDATED = "qrcode.updated"
CONNECTION_EVENTS = frozenset({CONNECTION_UPDATE, QRCODE_UPDATED})
"""Not messages (ignored here like any other event): their news is read by `parse_connection_event` and relayed to
channels, which keeps each instance's connection state and login QR."""

WRAPPERS = (
    "ephemeralMessage",
    "viewOnceMessage",
    "viewOnceMessageV2",
    "viewOnceMessageV2Extension",
    "documentWithCaptionMessage",
    "editedMessage",
)
"""Keys whose `.message` holds the real content; Evolution does not unwrap them (§2.3)."""
MAX_WRAPPER_DEPTH = 5

_MEDIA_TYPES = {
    "imageMessage": "image",
    "videoMessage": "video",
    "ptvMessage": "video",
    "audioMessage": "audio",
    "documentMessage": "document",
    "stickerMessage": "sticker",
}
_STRUCTURED_TYPES = {
    "reactionMessage": "reaction",
    "locationMessage": "location",
    "liveLocationMessage": "location",
    "contactMessage": "contact",
    "contactsArrayMessage": "contact",
}
_TEXT_KEYS = (
    "conversation",
    "extendedTextMessage",
    "buttonsResponseMessage",
    "listResponseMessage",
    "templateButtonReplyMessage",
    "interactiveResponseMessage",
    "pollUpdateMessage",
)


def normalize_event(raw: object) -> str:
    """The envelope spelling of an event name given in any of Evolution's three spellings (§1.2)."""
    if not isinstance(raw, str):
        return ""
    dotted = raw.strip().lower().replace("_", ".").replace("-", ".")
    return _CANONICAL.get(dotted, dotted)


def parse_envelope(envelope: Mapping[str, Any]) -> Received:
    """Interpret one decoded webhook body (a JSON object)."""
    event = normalize_event(envelope.get("event"))
    if not event:
        return Received(event="", kind="ignored", reason=REASON_NO_EVENT)
    own_jid = str_of(envelope.get("sender"))
    data = envelope.get("data")
    if event == SEND_MESSAGE:
        return _parse_own_send(event, dict_of(data), own_jid)
    if event in MESSAGE_EVENTS:
        return parse_message_event(event, data, extract_text)
    if event != MESSAGES_UPSERT:
        return ignored_event(event, event in KNOWN_EVENTS)
    if isinstance(data, list) and len(data) == 1:
        data = data[0]
    if not isinstance(data, dict):
        return Received(event=event, kind="ignored", reason=REASON_MALFORMED)
    return _parse_upsert(event, data, own_jid)


def _parse_own_send(event: str, data: dict[str, Any], own_jid: str) -> Received:
    key = dict_of(data.get("key"))
    key_id = str_of(key.get("id"))
    if not key_id:
        return Received(event=event, kind="ignored", reason=REASON_MALFORMED)
    chat_id = str_of(key.get("remoteJid"))
    message = _build_message(event, data, key, key_id, chat_id, own_jid) if chat_id else None
    return Received(event=event, kind="own_send", reason=REASON_OWN_SEND, channel_message_id=key_id, message=message)


def _parse_upsert(event: str, data: dict[str, Any], own_jid: str) -> Received:
    key = data.get("key")
    if not isinstance(key, dict):
        return Received(event=event, kind="ignored", reason=REASON_MALFORMED)
    key_id = str_of(key.get("id"))
    chat_id = str_of(key.get("remoteJid"))
    if not key_id or not chat_id:
        return Received(event=event, kind="ignored", reason=REASON_MALFORMED, channel_message_id=key_id)
    message = _build_message(event, data, key, key_id, chat_id, own_jid)
    reason = ""
    if key.get("fromMe") is True:
        reason = REASON_FROM_ME
    elif chat_id.endswith("@broadcast"):
        reason = REASON_BROADCAST
    elif chat_id.endswith("@newsletter"):
        reason = REASON_NEWSLETTER
    elif not message.message_type and not message.text:
        reason = REASON_NO_CONTENT
    if reason:
        return Received(event=event, kind="ignored", reason=reason, channel_message_id=key_id, message=message)
    return Received(event=event, kind="message", channel_message_id=key_id, message=message)


def _build_message(
    event: str, data: dict[str, Any], key: dict[str, Any], key_id: str, chat_id: str, own_jid: str
) -> InboundMessage:
    raw_message = dict_of(data.get("message"))
    content = unwrap(raw_message)
    message_type = content_type(content)
    text = extract_text(raw_message)
    if not text and message_type == "audio":
        text = str_of(raw_message.get("speechToText"))
    media = _media(raw_message, content, message_type)
    return InboundMessage(
        channel_message_id=key_id,
        chat_id=chat_id,
        sender=_sender(data, key, chat_id, own_jid),
        channel=Channel.WHATSAPP,
        message_type=message_type,
        text=text,
        media=media,
        quoted=_quoted(data, content),
        is_group=chat_id.endswith("@g.us"),
        sent_at=float(to_int(data.get("messageTimestamp")) or 0),
        raw_event=event,
    )


# --- identities (§2.1 "Hub rule") -------------------------------------------------------------------------


def bare_jid(jid: str) -> str:
    """`jid` without a `:device` suffix (5511...:12@s.whatsapp.net → 5511...@s.whatsapp.net)."""
    user, at, server = jid.partition("@")
    return f"{user.split(':', 1)[0]}{at}{server}"


def is_phone_jid(jid: str) -> bool:
    """True for a phone-number JID (…@s.whatsapp.net, or the legacy …@c.us)."""
    return jid.endswith(("@s.whatsapp.net", "@c.us"))


def phone_from_jid(jid: str) -> str:
    """ "+digits" of a phone JID, "" when it has no digits."""
    digits = "".join(ch for ch in bare_jid(jid).partition("@")[0] if ch.isdigit())
    return f"+{digits}" if digits else ""


def _sender(data: dict[str, Any], key: dict[str, Any], chat_id: str, own_jid: str) -> Sender:
    own = bare_jid(own_jid) if own_jid else ""
    if chat_id.endswith("@g.us"):
        participant = str_of(key.get("participant")) or str_of(data.get("participant"))
        alt_candidates = [key.get("participantAlt"), key.get("participantPn"), key.get("senderPn")]
        alt = next((str_of(c) for c in alt_candidates if str_of(c)), "")
        sender_id = participant or alt or chat_id
    else:
        sender_id = chat_id
        alt_candidates = [
            key.get("remoteJidAlt"),
            key.get("senderPn"),
            key.get("previousRemoteJid"),
            key.get("senderLid"),
            data.get("senderPn"),
            data.get("previousRemoteJid"),
        ]
        alt = next((str_of(c) for c in alt_candidates if str_of(c) and bare_jid(str_of(c)) != bare_jid(chat_id)), "")
    if alt and (bare_jid(alt) == bare_jid(sender_id) or (own and bare_jid(alt) == own)):
        alt = ""
    phone = ""
    for jid in (sender_id, alt):
        if is_phone_jid(jid) and bare_jid(jid) != own:
            phone = phone_from_jid(jid)
            break
    return Sender(id=sender_id, display_name=str_of(data.get("pushName")), phone_number=phone, alt_id=alt)


# --- content -------------------------------------------------------------------------------------------------


def unwrap(message: dict[str, Any], depth: int = 0) -> dict[str, Any]:
    """The innermost content of a message wrapped in ephemeral/viewOnce/documentWithCaption/edited wrappers."""
    if depth >= MAX_WRAPPER_DEPTH:
        return message
    for wrapper in WRAPPERS:
        inner = dict_of(dict_of(message.get(wrapper)).get("message"))
        if inner:
            return unwrap(inner, depth + 1)
    edited = dict_of(dict_of(message.get("protocolMessage")).get("editedMessage"))
    if edited:
        return unwrap(edited, depth + 1)
    return message


def content_type(content: dict[str, Any]) -> str:
    """The canonical message type of unwrapped content, "" when it carries nothing we handle."""
    for key, kind in _STRUCTURED_TYPES.items():
        if dict_of(content.get(key)):
            return kind
    for key, kind in _MEDIA_TYPES.items():
        if dict_of(content.get(key)):
            return kind
    for key in _TEXT_KEYS:
        value = content.get(key)
        if (isinstance(value, str) and value) or dict_of(value):
            return "text"
    return ""


def extract_text(message: dict[str, Any]) -> str:
    """The text of a message, first match wins (§2.3, a superset of Evolution's getConversationMessage)."""
    return _direct_text(message, 0) or _structured_text(unwrap(message))


def _direct_text(message: dict[str, Any], depth: int) -> str:
    text = str_of(message.get("conversation")) or str_of(dict_of(message.get("extendedTextMessage")).get("text"))
    if text:
        return text
    for media_key in ("imageMessage", "videoMessage", "documentMessage"):
        caption = str_of(dict_of(message.get(media_key)).get("caption"))
        if caption:
            return caption
    if depth >= MAX_WRAPPER_DEPTH:
        return ""
    for wrapper in WRAPPERS:
        inner = dict_of(dict_of(message.get(wrapper)).get("message"))
        if inner:
            text = _direct_text(inner, depth + 1)
            if text:
                return text
    edited = dict_of(dict_of(message.get("protocolMessage")).get("editedMessage"))
    return _direct_text(edited, depth + 1) if edited else ""


def _structured_text(content: dict[str, Any]) -> str:
    buttons = dict_of(content.get("buttonsResponseMessage"))
    text = str_of(buttons.get("selectedDisplayText")) or str_of(buttons.get("selectedButtonId"))
    if text:
        return text
    listing = dict_of(content.get("listResponseMessage"))
    text = str_of(listing.get("title")) or str_of(dict_of(listing.get("singleSelectReply")).get("selectedRowId"))
    if text:
        return text
    template = dict_of(content.get("templateButtonReplyMessage"))
    text = str_of(template.get("selectedDisplayText")) or str_of(template.get("selectedId"))
    if text:
        return text
    interactive = dict_of(content.get("interactiveResponseMessage"))
    text = str_of(dict_of(interactive.get("body")).get("text")) or str_of(
        dict_of(interactive.get("nativeFlowResponseMessage")).get("paramsJson")
    )
    if text:
        return text
    options = dict_of(dict_of(content.get("pollUpdateMessage")).get("vote")).get("selectedOptions")
    if isinstance(options, list):
        text = ", ".join(o for o in options if isinstance(o, str) and o)
        if text:
            return text
    text = str_of(dict_of(content.get("reactionMessage")).get("text"))
    if text:
        return text
    for contact_key in ("contactMessage", "contactsArrayMessage"):
        contact = dict_of(content.get(contact_key))
        text = str_of(contact.get("displayName")) or str_of(contact.get("vcard"))
        if text:
            return text
    for location_key in ("locationMessage", "liveLocationMessage"):
        location = dict_of(content.get(location_key))
        if location:
            return _location_text(location)
    return ""


def _location_text(location: dict[str, Any]) -> str:
    label = ", ".join(p for p in (str_of(location.get("name")), str_of(location.get("address"))) if p)
    lat, lng = location.get("degreesLatitude"), location.get("degreesLongitude")
    coords = f"({lat}, {lng})" if _is_number(lat) and _is_number(lng) else ""
    return " ".join(p for p in (label, coords) if p)


def _media(raw_message: dict[str, Any], content: dict[str, Any], message_type: str) -> tuple[Media, ...]:
    media_key = next((k for k, kind in _MEDIA_TYPES.items() if kind == message_type and dict_of(content.get(k))), "")
    if not media_key:
        return ()
    item = dict_of(content.get(media_key))
    return (
        Media(
            type=message_type,
            mime_type=str_of(item.get("mimetype")),
            url=str_of(raw_message.get("mediaUrl")) or str_of(item.get("url")),
            base64=str_of(raw_message.get("base64")),
            caption=str_of(item.get("caption")),
            filename=str_of(item.get("fileName"))
            or (str_of(item.get("title")) if media_key == "documentMessage" else ""),
            size_bytes=to_int(item.get("fileLength")) or 0,
            duration_seconds=to_int(item.get("seconds")) or 0,
            voice_note=media_key == "audioMessage" and item.get("ptt") is True,
        ),
    )


def _quoted(data: dict[str, Any], content: dict[str, Any]) -> QuotedMessage | None:
    candidates = [dict_of(data.get("contextInfo"))]
    # v1.8 keeps extendedTextMessage (and 2.4.0-rc drops data.contextInfo), so look in the content too.
    candidates += [dict_of(dict_of(v).get("contextInfo")) for v in content.values() if isinstance(v, dict)]
    for context in candidates:
        stanza_id = str_of(context.get("stanzaId"))
        if stanza_id:
            quoted_message = dict_of(context.get("quotedMessage"))
            return QuotedMessage(
                channel_message_id=stanza_id,
                sender_id=str_of(context.get("participant")),
                text=extract_text(quoted_message) if quoted_message else "",
            )
    return None


# --- defensive readers ---------------------------------------------------------------------------------------


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True)
class ConnectionReport:
    """What a `connection.update` or `qrcode.updated` says, in the hub's words (§3). `state` is connected,
    connecting, disconnected or error, and "" for a QR event (the state stays what it was)."""

    state: str = ""
    raw_state: str = ""
    qr_code: str = ""
    """Raw base64 PNG, without Evolution's data: prefix."""
    pairing_code: str = ""
    detail: str = ""
    account_id: str = ""
    account_name: str = ""


_CONNECTION_STATES = {"open": "connected", "connecting": "connecting", "close": "disconnected", "refused": "error"}
_DATA_URL_PNG = "data:image/png;base64,"


def parse_connection_event(envelope: Mapping[str, Any]) -> ConnectionReport | None:
    """The connection news of a `connection.update` / `qrcode.updated` envelope; None for any other event or a
    payload that says nothing usable. Pure, and lenient like the rest of this module."""
    event = normalize_event(envelope.get("event"))
    data = dict_of(envelope.get("data"))
    if event == CONNECTION_UPDATE:
        raw = str_of(data.get("state")).lower()
        state = _CONNECTION_STATES.get(raw)
        if state is None:
            return None
        reason = data.get("statusReason")
        if raw == "open":
            return ConnectionReport(
                state=state,
                raw_state=raw,
                account_id=str_of(data.get("wuid")),
                account_name=str_of(data.get("profileName")),
            )
        if raw == "refused":
            return ConnectionReport(state=state, raw_state=raw, detail="QR code limit reached")
        if raw == "close":
            detail = f"connection closed (status {reason})" if _is_number(reason) else "connection closed"
            return ConnectionReport(state=state, raw_state=raw, detail=detail)
        return ConnectionReport(state=state, raw_state=raw)
    if event == QRCODE_UPDATED:
        qrcode = data.get("qrcode")
        if isinstance(qrcode, dict):
            qr = str_of(qrcode.get("base64")).removeprefix(_DATA_URL_PNG)
            pairing = str_of(qrcode.get("pairingCode"))
            return ConnectionReport(raw_state="connecting", qr_code=qr, pairing_code=pairing) if qr or pairing else None
        message = str_of(data.get("message"))
        if message:  # the QR limit variant: {"message": "QR code limit reached, ...", "statusCode": 500}
            return ConnectionReport(state="error", raw_state="refused", detail=message)
    return None
