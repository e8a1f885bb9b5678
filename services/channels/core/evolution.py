"""A small client for the Evolution API REST calls the hub makes (the Evolution wire contract, §4).

Every failure is classified once, here, into the sender seam's errors (`senders.base`):
- `ChannelTransientError`: try again later. `outcome_unknown` is True when the request may have reached
  Evolution (a timeout, a dropped connection, a proxy's 502/504), so the message may already be out and must be
  reconciled before a resend.
- `ChannelRejectedError`: Evolution refused for good (400, 401/403, 404); resending the same request is useless.

Evolution's quirks handled: the `apikey` header, error bodies whose `response.message` is a list or a string,
the 400 `Error: rate-overlimit` that is really WhatsApp throttling, and `/instance/connect` answering
200 `{error: true}` on failure.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson

from servicekit.address_guard import AddressRefusedError
from servicekit.instances import Instance, WhatsAppConfig
from servicekit.messages import ContactCard, Location, Media, Profile, Reaction, raw_base64
from servicekit.outbound_http import ResponseTooLargeError, is_redirect, read_capped, redirect_message
from services.channels.core.senders.base import (
    REASON_MISCONFIGURED,
    REASON_REJECTED,
    ChannelRejectedError,
    ChannelTransientError,
)

REASON_UNAUTHORIZED = "EVOLUTION_UNAUTHORIZED"
REASON_INSTANCE_NOT_FOUND = "EVOLUTION_INSTANCE_NOT_FOUND"
REASON_NOT_ON_WHATSAPP = "RECIPIENT_NOT_ON_WHATSAPP"
"""A 400 `[{exists: false}]`: the number has no WhatsApp account (the caller's to fix, not the channel's fault)."""
REASON_REQUEST_INVALID = "CHANNEL_REQUEST_INVALID"
"""A 400 from Evolution's own validation ("Reaction must be a single emoji...", "Owned media must be a url or
base64"): the request was wrong. A 400 `Error: ...` is a failure inside the send and keeps CHANNEL_REJECTED."""

_DATA_URL_PNG = "data:image/png;base64,"
_UNKNOWN_OUTCOME_STATUSES = frozenset({502, 504})
"""A proxy in front of Evolution lost the upstream answer: the send may have happened."""
MAX_RESPONSE_BYTES = 8 * 1024 * 1024
"""Largest Evolution answer read (a QR or 50 message records are far smaller); the tenant picks the server."""


@dataclass(frozen=True)
class ConnectInfo:
    """What /instance/connect said: a QR (raw base64 PNG), a pairing code, the state when already open, or an error."""

    qr_code: str = ""
    pairing_code: str = ""
    state: str = ""
    error: str = ""


def error_text(body: Any) -> str:
    """Evolution's `response.message` (a list of strings or objects, or a string) as one line."""
    if not isinstance(body, dict):
        return str(body)[:500] if body else ""
    response = body.get("response")
    message = response.get("message") if isinstance(response, dict) else body.get("message")
    if message is None:
        return str(body.get("error", ""))
    items = message if isinstance(message, list) else [message]
    texts: list[str] = []
    for item in items:
        if isinstance(item, dict) and item.get("exists") is False:
            texts.append(f"{item.get('number') or item.get('jid')} is not on WhatsApp")
        elif isinstance(item, str):
            texts.append(item)
        else:
            texts.append(json.dumps(item, ensure_ascii=False))
    return "; ".join(texts)


def _retry_after(header: str | None) -> float | None:
    if not header:
        return None
    try:
        return max(0.0, float(header))
    except ValueError:
        pass
    try:
        when = dt.datetime.strptime(header, "%a, %d %b %Y %H:%M:%S GMT").replace(tzinfo=dt.UTC)
    except ValueError:
        return None
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


def media_type(media: Media) -> str:
    """Evolution's sendMedia `mediatype` (image, video, audio or document)."""
    kind = media.type
    if kind == "sticker":
        return "image"
    if kind in {"image", "video", "audio", "document"}:
        return kind
    major = media.mime_type.split("/", 1)[0]
    return major if major in {"image", "video", "audio"} else "document"


class EvolutionClient:
    """Calls one Evolution server per instance, with that instance's own URL, key and Evolution instance name."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        timeout_seconds: float = 15.0,
        rate_limit_backoff_seconds: float = 10.0,
    ) -> None:
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._rate_limit_backoff = rate_limit_backoff_seconds

    async def send_text(self, instance: Instance, number: str, text: str, *, quoted_id: str = "") -> str:
        """Send a text; returns Evolution's `key.id` of the new message."""
        body: dict[str, Any] = {"number": number, "text": text}
        if quoted_id:
            body["quoted"] = {"key": {"id": quoted_id}}
        return _key_id(await self.call(instance, "POST", "message/sendText", body))

    async def send_media(
        self, instance: Instance, number: str, media: Media, *, caption: str = "", quoted_id: str = ""
    ) -> str:
        """Send a file by URL or raw base64; returns Evolution's `key.id` of the new message."""
        body: dict[str, Any] = {
            "number": number,
            "mediatype": media_type(media),
            "media": media.url or raw_base64(media.base64),
        }
        if media.mime_type:
            body["mimetype"] = media.mime_type
        if caption:
            body["caption"] = caption
        if media.filename:
            body["fileName"] = media.filename
        elif body["mediatype"] == "document":
            body["fileName"] = "file"  # Evolution requires a name for base64 documents
        if quoted_id:
            body["quoted"] = {"key": {"id": quoted_id}}
        return _key_id(await self.call(instance, "POST", "message/sendMedia", body))

    async def send_audio(self, instance: Instance, number: str, media: Media) -> str:
        """Send a voice note (`sendWhatsAppAudio`: Evolution re-encodes it to ogg/opus and marks it ptt); returns the
        new message's `key.id`. No quote: Evolution honours one here only from 2.4.0-rc."""
        body = {"number": number, "audio": media.url or raw_base64(media.base64), "encoding": True}
        return _key_id(await self.call(instance, "POST", "message/sendWhatsAppAudio", body))

    async def send_sticker(self, instance: Instance, number: str, media: Media) -> str:
        """Send a sticker (`sendSticker`: Evolution converts the image to webp); returns the new `key.id`."""
        body = {"number": number, "sticker": media.url or raw_base64(media.base64)}
        return _key_id(await self.call(instance, "POST", "message/sendSticker", body))

    async def send_reaction(self, instance: Instance, remote_jid: str, reaction: Reaction) -> str:
        """React to the message `reaction.message_id` of the chat `remote_jid` (a full JID: the key names it so);
        an empty emoji removes the reaction. Returns the reaction message's own `key.id`."""
        body = {
            "key": {"remoteJid": remote_jid, "fromMe": reaction.from_me, "id": reaction.message_id},
            "reaction": reaction.emoji,
        }
        return _key_id(await self.call(instance, "POST", "message/sendReaction", body))

    async def send_location(self, instance: Instance, number: str, location: Location) -> str:
        """Send a map pin; Evolution's schema requires name and address, so absent ones go as ""."""
        body = {
            "number": number,
            "latitude": location.latitude,
            "longitude": location.longitude,
            "name": location.name,
            "address": location.address,
        }
        return _key_id(await self.call(instance, "POST", "message/sendLocation", body))

    async def send_contact(self, instance: Instance, number: str, contacts: Sequence[ContactCard]) -> str:
        """Send contact cards as one message (Evolution builds the vCards; `wuid` is the card's WhatsApp id, its
        digits); returns the new `key.id`."""
        cards: list[dict[str, str]] = []
        for card in contacts:
            entry = {
                "fullName": card.full_name,
                "wuid": re.sub(r"\D", "", card.phone_number),
                "phoneNumber": card.phone_number,
            }
            if card.organization:
                entry["organization"] = card.organization
            if card.email:
                entry["email"] = card.email
            cards.append(entry)
        return _key_id(await self.call(instance, "POST", "message/sendContact", {"number": number, "contact": cards}))

    async def fetch_profile(self, instance: Instance, number: str) -> Profile:
        """The public profile of `number` (`chat/fetchProfile`); a number without WhatsApp is refused."""
        body = await self.call(instance, "POST", "chat/fetchProfile", {"number": number})
        if not isinstance(body, dict):
            raise ChannelTransientError("Evolution answered chat/fetchProfile without a profile")
        if body.get("numberExists") is False:
            raise ChannelRejectedError(f"{number} is not on WhatsApp", reason=REASON_NOT_ON_WHATSAPP)
        return profile_of(body, number)

    async def send_presence(self, instance: Instance, number: str, presence: str, delay_ms: int) -> None:
        """Show `presence`; Evolution holds the request open for `delay_ms` and then clears it."""
        timeout = aiohttp.ClientTimeout(total=(self._timeout.total or 15.0) + delay_ms / 1000)
        await self.call(
            instance,
            "POST",
            "chat/sendPresence",
            {"number": number, "presence": presence, "delay": delay_ms},
            timeout=timeout,
        )

    async def connection_state(self, instance: Instance) -> str:
        """Evolution's state word: open, connecting or close."""
        body = await self.call(instance, "GET", "instance/connectionState")
        inner = body.get("instance") if isinstance(body, dict) else None
        state = inner.get("state") if isinstance(inner, dict) else None
        return str(state or "")

    async def connect(self, instance: Instance) -> ConnectInfo:
        """Start (or continue) a login and fetch its QR; 200 `{error: true}` comes back as `ConnectInfo.error`."""
        body = await self.call(instance, "GET", "instance/connect")
        if not isinstance(body, dict):
            return ConnectInfo(error="unexpected answer from /instance/connect")
        if body.get("error") is True:
            return ConnectInfo(error=str(body.get("message") or "connect failed"))
        inner = body.get("instance")
        if isinstance(inner, dict):
            return ConnectInfo(state=str(inner.get("state") or ""))
        qr = str(body.get("base64") or "")
        return ConnectInfo(qr_code=qr.removeprefix(_DATA_URL_PNG), pairing_code=str(body.get("pairingCode") or ""))

    async def set_webhook(self, instance: Instance, url: str, headers: dict[str, str], events: list[str]) -> None:
        """Point the instance webhook at `url` with `headers` (Evolution ≥ 2.2 wants the body wrapped in "webhook"
        and always an `events` list, see its contract §1.1)."""
        webhook = {
            "enabled": True,
            "url": url,
            "headers": headers,
            "byEvents": False,
            "base64": False,
            "events": events,
        }
        await self.call(instance, "POST", "webhook/set", {"webhook": webhook})

    async def find_messages(self, instance: Instance, remote_jid: str, since: float) -> list[dict[str, Any]]:
        """Our own (fromMe) messages in a chat since `since` (epoch seconds), newest first."""
        iso = dt.datetime.fromtimestamp(since, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        body = await self.call(
            instance,
            "POST",
            "chat/findMessages",
            {
                "where": {"key": {"remoteJid": remote_jid, "fromMe": True}, "messageTimestamp": {"gte": iso}},
                "page": 1,
                "offset": 50,
            },
        )
        messages = body.get("messages") if isinstance(body, dict) else None
        records = messages.get("records") if isinstance(messages, dict) else None
        return [r for r in records if isinstance(r, dict)] if isinstance(records, list) else []

    async def call(
        self,
        instance: Instance,
        method: str,
        action: str,
        body: dict[str, Any] | None = None,
        *,
        timeout: aiohttp.ClientTimeout | None = None,
        max_bytes: int = MAX_RESPONSE_BYTES,
    ) -> Any:
        """One call of `action` on the instance (its URL, key and Evolution name), classified once for every caller:
        the sends here and the modules that add endpoints of their own (`evolution_admin`, `evolution_media`,
        `evolution_directory`)."""
        config = instance.config_of(WhatsAppConfig)
        url = f"{config.evolution_url.rstrip('/')}/{action}/{quote(config.whatsapp_instance, safe='')}"
        return await self.request_url(method, url, config.evolution_key, body, timeout=timeout, max_bytes=max_bytes)

    async def request_url(
        self,
        method: str,
        url: str,
        apikey: str,
        body: dict[str, Any] | None = None,
        *,
        timeout: aiohttp.ClientTimeout | None = None,
        max_bytes: int = MAX_RESPONSE_BYTES,
    ) -> Any:
        """One Evolution call on a full URL with the given `apikey`, classified like every other: the instance-level
        calls (create, fetchInstances, delete) name no instance in the path, or use a key no instance holds yet."""
        try:
            async with self._session.request(
                method,
                url,
                # orjson: aiohttp's json= goes through the stdlib encoder, a visible cost on the send path.
                data=orjson.dumps(body) if body is not None else None,
                headers={"apikey": apikey, "Content-Type": "application/json"}
                if body is not None
                else {"apikey": apikey},
                timeout=timeout or self._timeout,
                allow_redirects=False,  # a redirect would carry the apikey to a host nobody validated
            ) as response:
                status = response.status
                if is_redirect(status):
                    raise ChannelRejectedError(
                        redirect_message(response, "Evolution"), reason=REASON_MISCONFIGURED, status=status
                    )
                raw = await read_capped(response, max_bytes)
                retry_after = _retry_after(response.headers.get("Retry-After"))
        except AddressRefusedError as exc:
            raise ChannelRejectedError(f"Evolution address refused: {exc}", reason=REASON_MISCONFIGURED) from exc
        except ResponseTooLargeError as exc:
            # The request was carried out (a send may be out): reconcile rather than resend blindly.
            raise ChannelTransientError(f"Evolution answer refused: {exc}", outcome_unknown=True) from exc
        except aiohttp.ClientConnectorError as exc:
            raise ChannelTransientError(f"cannot connect to Evolution: {exc}") from exc
        except TimeoutError as exc:
            raise ChannelTransientError("Evolution did not answer in time", outcome_unknown=True) from exc
        except aiohttp.ClientError as exc:
            raise ChannelTransientError(f"Evolution connection failed: {exc}", outcome_unknown=True) from exc
        parsed = _json_or_text(raw)
        if 200 <= status < 300:
            return parsed
        text = error_text(parsed) or f"HTTP {status}"
        if status == 429:
            raise ChannelTransientError(f"throttled: {text}", retry_after=retry_after, rate_limited=True)
        if status == 400 and "rate-overlimit" in text:
            raise ChannelTransientError(
                f"WhatsApp rate limit: {text}", retry_after=self._rate_limit_backoff, rate_limited=True
            )
        if status in (401, 403):
            raise ChannelRejectedError(
                f"Evolution refused the instance's key (check its evolution_key): {text}",
                reason=REASON_UNAUTHORIZED,
                status=status,
            )
        if status == 404:
            raise ChannelRejectedError(
                f"Evolution instance not found: {text}", reason=REASON_INSTANCE_NOT_FOUND, status=status
            )
        if status == 408 or status >= 500:
            raise ChannelTransientError(
                f"Evolution error {status}: {text}",
                retry_after=retry_after,
                outcome_unknown=status in _UNKNOWN_OUTCOME_STATUSES,
            )
        raise ChannelRejectedError(
            text, reason=rejection_reason(parsed) if status == 400 else REASON_REJECTED, status=status
        )


def rejection_reason(body: Any) -> str:
    """Why Evolution answered 400: the recipient is not on WhatsApp, its own validation refused the request (the
    caller's to fix), or something failed inside the send (`Error: ...`, WhatsApp's words: the channel's fault)."""
    response = body.get("response") if isinstance(body, dict) else None
    message = response.get("message") if isinstance(response, dict) else None
    items = message if isinstance(message, list) else [message] if message is not None else []
    if any(isinstance(item, dict) and item.get("exists") is False for item in items):
        return REASON_NOT_ON_WHATSAPP
    if items and all(isinstance(item, str) and not item.startswith("Error") for item in items):
        return REASON_REQUEST_INVALID
    return REASON_REJECTED


def _json_or_text(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")[:500]


def profile_of(body: dict[str, Any], number: str) -> Profile:
    """A `chat/fetchProfile` answer as a Profile: `status` is Baileys' `{status, setAt}` (a plain string in some
    versions), `wuid` the person's JID, from which a phone account's number follows."""
    wuid = str(body.get("wuid") or "")
    status = body.get("status")
    if isinstance(status, dict):
        status = status.get("status")
    phone = wuid.split("@", 1)[0] if wuid.endswith("@s.whatsapp.net") else ""
    return Profile(
        id=wuid or number,
        name=str(body.get("name") or ""),
        phone_number=f"+{phone}" if phone.isdigit() else "",
        status=str(status or ""),
        picture_url=str(body.get("picture") or ""),
        is_business=body.get("isBusiness") is True,
        description=str(body.get("description") or ""),
    )


def _key_id(body: Any) -> str:
    """The new message's key.id from a 201 MessageRaw; an answer without one leaves the outcome unknown."""
    key = body.get("key") if isinstance(body, dict) else None
    key_id = key.get("id") if isinstance(key, dict) else None
    if not key_id:
        raise ChannelTransientError("Evolution accepted the send but returned no key.id", outcome_unknown=True)
    return str(key_id)
