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
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson

from servicekit.address_guard import AddressRefusedError
from servicekit.instances import Instance, WhatsAppConfig
from servicekit.messages import Media, raw_base64
from servicekit.outbound_http import ResponseTooLargeError, is_redirect, read_capped, redirect_message
from services.channels.core.senders.base import REASON_MISCONFIGURED, ChannelRejectedError, ChannelTransientError

REASON_UNAUTHORIZED = "EVOLUTION_UNAUTHORIZED"
REASON_INSTANCE_NOT_FOUND = "EVOLUTION_INSTANCE_NOT_FOUND"

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
        return _key_id(await self._request(instance, "POST", "message/sendText", body))

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
        return _key_id(await self._request(instance, "POST", "message/sendMedia", body))

    async def send_presence(self, instance: Instance, number: str, presence: str, delay_ms: int) -> None:
        """Show `presence`; Evolution holds the request open for `delay_ms` and then clears it."""
        timeout = aiohttp.ClientTimeout(total=(self._timeout.total or 15.0) + delay_ms / 1000)
        await self._request(
            instance,
            "POST",
            "chat/sendPresence",
            {"number": number, "presence": presence, "delay": delay_ms},
            timeout=timeout,
        )

    async def connection_state(self, instance: Instance) -> str:
        """Evolution's state word: open, connecting or close."""
        body = await self._request(instance, "GET", "instance/connectionState")
        inner = body.get("instance") if isinstance(body, dict) else None
        state = inner.get("state") if isinstance(inner, dict) else None
        return str(state or "")

    async def connect(self, instance: Instance) -> ConnectInfo:
        """Start (or continue) a login and fetch its QR; 200 `{error: true}` comes back as `ConnectInfo.error`."""
        body = await self._request(instance, "GET", "instance/connect")
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
        await self._request(instance, "POST", "webhook/set", {"webhook": webhook})

    async def find_messages(self, instance: Instance, remote_jid: str, since: float) -> list[dict[str, Any]]:
        """Our own (fromMe) messages in a chat since `since` (epoch seconds), newest first."""
        iso = dt.datetime.fromtimestamp(since, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        body = await self._request(
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

    async def _request(
        self,
        instance: Instance,
        method: str,
        action: str,
        body: dict[str, Any] | None = None,
        *,
        timeout: aiohttp.ClientTimeout | None = None,
    ) -> Any:
        config = instance.config_of(WhatsAppConfig)
        url = f"{config.evolution_url.rstrip('/')}/{action}/{quote(config.whatsapp_instance, safe='')}"
        try:
            async with self._session.request(
                method,
                url,
                # orjson: aiohttp's json= goes through the stdlib encoder, a visible cost on the send path.
                data=orjson.dumps(body) if body is not None else None,
                headers={"apikey": config.evolution_key, "Content-Type": "application/json"}
                if body is not None
                else {"apikey": config.evolution_key},
                timeout=timeout or self._timeout,
                allow_redirects=False,  # a redirect would carry the apikey to a host nobody validated
            ) as response:
                status = response.status
                if is_redirect(status):
                    raise ChannelRejectedError(
                        redirect_message(response, "Evolution"), reason=REASON_MISCONFIGURED, status=status
                    )
                raw = await read_capped(response, MAX_RESPONSE_BYTES)
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
            raise ChannelRejectedError(f"Evolution refused the key: {text}", reason=REASON_UNAUTHORIZED, status=status)
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
        raise ChannelRejectedError(text, status=status)


def _json_or_text(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")[:500]


def _key_id(body: Any) -> str:
    """The new message's key.id from a 201 MessageRaw; an answer without one leaves the outcome unknown."""
    key = body.get("key") if isinstance(body, dict) else None
    key_id = key.get("id") if isinstance(key, dict) else None
    if not key_id:
        raise ChannelTransientError("Evolution accepted the send but returned no key.id", outcome_unknown=True)
    return str(key_id)
