"""Evolution API v2.3.7 wire shapes: ids, JIDs, MessageRaw, error bodies and webhook envelopes.

Pure functions shared by the simulator's endpoint modules and by tests and demos that need to play
WhatsApp's side of a conversation (`text_upsert` + `post_webhook`, re-exported by `simulators.evolution`).
Every shape follows the Evolution API wire contract (its fixtures are copied in tests/fixtures/evolution), so
a hub that passes against these passes against a real Evolution server of the 2.3.x line.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import time
import uuid
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

import aiohttp
import orjson

OWN_PUSH_NAME = "Você"
"""The pushName Evolution puts on messages sent through the API (§3 `send.message`)."""

AXIOS_HEADERS = {
    "Content-Type": "application/json",
    "Accept": "application/json, text/plain, */*",
    "User-Agent": "axios/1.7.9",
}
"""The headers Evolution's axios client puts on every webhook POST (§1.4)."""

ALL_EVENTS = (
    "APPLICATION_STARTUP",
    "INSTANCE_CREATE",
    "INSTANCE_DELETE",
    "QRCODE_UPDATED",
    "MESSAGES_SET",
    "MESSAGES_UPSERT",
    "MESSAGES_EDITED",
    "MESSAGES_UPDATE",
    "MESSAGES_DELETE",
    "SEND_MESSAGE",
    "SEND_MESSAGE_UPDATE",
    "CONTACTS_SET",
    "CONTACTS_UPSERT",
    "CONTACTS_UPDATE",
    "PRESENCE_UPDATE",
    "CHATS_SET",
    "CHATS_UPSERT",
    "CHATS_UPDATE",
    "CHATS_DELETE",
    "GROUPS_UPSERT",
    "GROUP_UPDATE",
    "GROUP_PARTICIPANTS_UPDATE",
    "CONNECTION_UPDATE",
    "LABELS_EDIT",
    "LABELS_ASSOCIATION",
    "CALL",
    "TYPEBOT_START",
    "TYPEBOT_CHANGE_STATUS",
    "REMOVE_INSTANCE",
    "LOGOUT_INSTANCE",
    "STATUS_INSTANCE",
)
"""Valid subscription names (`EventController.events`); `events: []` with `enabled: true` stores all of them."""

HTTP_URL = re.compile(r"^https?://", re.IGNORECASE)
"""A URL Evolution fetches (media) or POSTs to (webhooks); media that is not one must be base64."""

TINY_PNG_BASE64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
"""A real 1x1 PNG, the stand-in for the QR code image (`data:image/png;base64,...`)."""


def subscription_name(event: str) -> str:
    """`messages.upsert` → `MESSAGES_UPSERT`: the spelling used in subscription lists (§1.2)."""
    return event.replace(".", "_").replace("-", "_").upper()


def by_events_suffix(event: str) -> str:
    """`messages.upsert` → `messages-upsert`: the URL suffix when `byEvents` is on (§1.2)."""
    return subscription_name(event).replace("_", "-").lower()


def instance_uuid(name: str) -> str:
    """A stable instance UUID derived from the name, so builders and the simulator agree on `instanceId`."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"evolution-simulator/{name}"))


def new_send_id() -> str:
    """A fresh id of the shape Baileys gives API sends: `3EB0` + 18 upper-case hex characters."""
    return "3EB0" + secrets.token_hex(9).upper()


def new_android_id() -> str:
    """A fresh 32-character upper-case hex id, the shape of messages typed on an Android phone."""
    return secrets.token_hex(16).upper()


def new_record_id() -> str:
    """A cuid-like database row id (`c` + 24 lower-case characters), as in `findMessages` records."""
    return "c" + secrets.token_hex(12)


def source_of(message_id: str) -> str:
    """Baileys `getDevice`: guess the sending device from the id shape (§2 `source`)."""
    if message_id.startswith("3A") and len(message_id) == 20:
        return "ios"
    if message_id.startswith("3E") and len(message_id) == 22:
        return "web"
    if len(message_id) in (21, 32):
        return "android"
    if message_id.startswith(("3F", "3B")):
        return "desktop"
    return "unknown"


def jid_of(number: str) -> str:
    """Evolution `createJid`: a full JID is kept; digits (punctuation stripped) become a user or group JID.

    The Brazilian/Mexican/Argentine 9th-digit normalization of real Evolution is deliberately not applied:
    the simulator answers with exactly the digits it was given.
    """
    if "@" in number:
        return number
    cleaned = re.sub(r"[\s+()]", "", number).split(":")[0]
    if "-" in cleaned and len(cleaned) >= 24:
        return re.sub(r"[^\d-]", "", cleaned) + "@g.us"
    digits = re.sub(r"\D", "", cleaned)
    if len(digits) >= 18:
        return f"{digits}@g.us"
    return f"{digits}@s.whatsapp.net"


def index_bytes(size: int) -> dict[str, int]:
    """Random bytes in the 2.3.6+ index-keyed object encoding (§2.2); the hub must treat them as opaque."""
    return {str(i): b for i, b in enumerate(secrets.token_bytes(size))}


def long_value(value: int, *, unsigned: bool) -> dict[str, Any]:
    """An int64 in the 2.3.6+ `{low, high, unsigned}` encoding (§2.2)."""
    low = value & 0xFFFFFFFF
    if not unsigned and low >= 2**31:
        low -= 2**32
    return {"low": low, "high": value >> 32, "unsigned": unsigned}


def send_context_info(timestamp: int) -> dict[str, Any]:
    """The contextInfo Evolution adds to API sends in 1:1 chats (§3 `send.message`)."""
    return {
        "mentionedJid": [],
        "groupMentions": [],
        "ephemeralSettingTimestamp": long_value(timestamp - 173_000, unsigned=False),
        "disappearingMode": {"initiator": 0},
    }


def message_type_of(message: dict[str, Any]) -> str:
    """Baileys `getContentType`: the first `conversation`/`*Message` key, skipping sender-key distribution."""
    for key in message:
        if key == "conversation" or (key.endswith("Message") and key != "senderKeyDistributionMessage"):
            return key
    return "unknown"


def error_body(status: int, message: Any) -> dict[str, Any]:
    """The error shape of §4.2: `{"status", "error": <reason phrase>, "response": {"message": ...}}`."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    return {"status": status, "error": phrase, "response": {"message": message}}


def default_error_message(status: int, instance: str) -> Any:
    """What Evolution puts in `response.message` for a send that failed with `status` (§4.2 table)."""
    if status == 400:
        return ["Error: rate-overlimit"]
    if status == 401:
        return "Unauthorized"
    if status == 403:
        return ["Forbidden"]
    if status == 404:
        return [f'The "{instance}" instance does not exist']
    if status == 500:
        return "Connection Closed"
    try:
        return [HTTPStatus(status).phrase]
    except ValueError:
        return ["Error"]


def iso_now() -> str:
    """`date_time` as Evolution writes it: ISO-8601 with milliseconds and a `Z` (UTC here)."""
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def parse_iso(value: Any) -> float | None:
    """Epoch seconds of an ISO-8601 string or a number, None when it cannot be read."""
    if isinstance(value, int | float):
        return float(value)
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def envelope(
    event: str,
    instance: str,
    data: Any,
    *,
    destination: str,
    sender: str | None,
    server_url: str,
) -> dict[str, Any]:
    """A webhook envelope with the key order of `webhook.controller.ts#emit` (§1.3)."""
    body: dict[str, Any] = {"event": event, "instance": instance, "data": data, "destination": destination}
    body["date_time"] = iso_now()
    if sender is not None:
        body["sender"] = sender
    body["server_url"] = server_url
    body["apikey"] = None
    return body


def webhook_jwt(secret: str, *, now: float | None = None) -> str:
    """The HS256 JWT Evolution sends as `Authorization: Bearer` when `headers.jwt_key` is set (§1.4)."""
    issued = int(time.time() if now is None else now)

    def part(obj: dict[str, Any]) -> bytes:
        return base64.urlsafe_b64encode(json.dumps(obj, separators=(",", ":")).encode()).rstrip(b"=")

    signing_input = (
        part({"alg": "HS256", "typ": "JWT"})
        + b"."
        + part({"iat": issued, "exp": issued + 600, "app": "evolution", "action": "webhook"})
    )
    signature = hmac.new(secret.encode(), signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + base64.urlsafe_b64encode(signature).rstrip(b"=")).decode()


def webhook_headers(custom: dict[str, Any] | None) -> dict[str, str]:
    """axios defaults plus the instance's custom headers, with `jwt_key` turned into a Bearer JWT."""
    headers = dict(AXIOS_HEADERS)
    for name, value in (custom or {}).items():
        if name == "jwt_key":
            headers["Authorization"] = f"Bearer {webhook_jwt(str(value))}"
        else:
            headers[str(name)] = str(value)
    return headers


def _device_list_metadata() -> dict[str, Any]:
    """The `messageContextInfo` every received message carries; opaque noise the hub must ignore."""
    now = int(time.time())
    return {
        "deviceListMetadata": {
            "senderKeyHash": index_bytes(10),
            "senderTimestamp": long_value(now - 86_000, unsigned=True),
            "senderAccountType": 0,
            "receiverAccountType": 0,
            "recipientKeyHash": index_bytes(10),
            "recipientTimestamp": long_value(now - 172_000, unsigned=True),
        },
        "deviceListMetadataVersion": 2,
        "messageSecret": index_bytes(32),
    }


def text_upsert(
    instance: str,
    remote_jid: str,
    text: str,
    *,
    message_id: str | None = None,
    push_name: str = "Maria Souza",
    from_me: bool = False,
    timestamp: int | None = None,
    participant: str | None = None,
    remote_jid_alt: str | None = None,
    own_jid: str = "5511987650000@s.whatsapp.net",
) -> dict[str, Any]:
    """A complete 2.3.7 `messages.upsert` envelope for a plain text message (fixture messages-upsert-text.json).

    Args:
        instance: Instance name (envelope `instance`).
        remote_jid: The chat: a user JID for 1:1, the group JID when `participant` is given.
        text: The `conversation` text.
        message_id: WhatsApp `key.id`; a random 32-hex (Android-shaped) id when None.
        push_name: The author's profile name.
        from_me: True for a message typed on the instance's own phone (`status: SERVER_ACK`).
        timestamp: `messageTimestamp` in epoch seconds; now when None.
        participant: The author in a group (`key.participant`); None makes a 1:1 message.
        remote_jid_alt: The author's other identity: `key.remoteJidAlt` in 1:1, `key.participantAlt` in a group.
        own_jid: The instance's own JID (envelope `sender`).
    """
    key_id = message_id or new_android_id()
    author = participant if participant is not None else remote_jid
    key: dict[str, Any] = {"remoteJid": remote_jid}
    if participant is None and remote_jid_alt is not None:
        key["remoteJidAlt"] = remote_jid_alt
    key["fromMe"] = from_me
    key["id"] = key_id
    key["participant"] = participant if participant is not None else ""
    if participant is not None and remote_jid_alt is not None:
        key["participantAlt"] = remote_jid_alt
    key["addressingMode"] = "lid" if author.endswith("@lid") else "pn"
    data: dict[str, Any] = {
        "key": key,
        "pushName": push_name,
        "status": "SERVER_ACK" if from_me else "DELIVERY_ACK",
        "message": {"conversation": text, "messageContextInfo": _device_list_metadata()},
        "messageType": "conversation",
        "messageTimestamp": int(time.time()) if timestamp is None else timestamp,
        "instanceId": instance_uuid(instance),
        "source": source_of(key_id),
    }
    return envelope(
        "messages.upsert",
        instance,
        data,
        destination=f"http://127.0.0.1/webhooks/evolution/{instance}",
        sender=own_jid,
        server_url="http://127.0.0.1:8080",
    )


async def post_webhook(session: aiohttp.ClientSession, url: str, envelope: dict[str, Any]) -> int:
    """POST an envelope the way Evolution does (axios headers, JSON body) and return the HTTP status."""
    async with session.post(url, data=orjson.dumps(envelope), headers=AXIOS_HEADERS) as response:
        await response.read()
        return response.status
