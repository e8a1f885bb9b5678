"""Message endpoints: the sends (`/message/send*`) and the chat actions (`/chat/*`).

Every send goes through one pipeline: auth → validation → reachability → latency → injected fault → record →
answer. A recorded send answers the MessageRaw WhatsApp would have produced (§4.3), is stored for
`findMessages` (§4.5) and is posted as `send.message` to a subscribed webhook.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import math
import mimetypes
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from simulators.evolution.rest import EvolutionError, authorize, json_response, read_body, required
from simulators.evolution.state import EvolutionState, Fault, Instance, SentMessage
from simulators.evolution.webhooks import WebhookDelivery
from simulators.evolution.wire import (
    HTTP_URL,
    OWN_PUSH_NAME,
    default_error_message,
    error_body,
    index_bytes,
    jid_of,
    long_value,
    message_type_of,
    new_record_id,
    new_send_id,
    parse_iso,
    send_context_info,
)

_PRESENCES = ("composing", "recording", "paused", "available", "unavailable")
_MEDIA_TYPES = ("image", "video", "document", "audio")
_DEFAULT_MIME = {"image": "image/jpeg", "video": "video/mp4", "document": "application/pdf", "audio": "audio/mpeg"}


@dataclass(frozen=True)
class Outgoing:
    """What a send endpoint validated and is about to deliver."""

    number: str
    text: str
    remote_jid: str
    message: dict[str, Any]
    context_info: dict[str, Any] | None
    base64_media: str | None = None


Build = Callable[[Instance, dict[str, Any]], Outgoing]
"""A send endpoint's own part: validate the body and build the message (raising `EvolutionError`)."""


def _is_base64(value: str) -> bool:
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return False
    return bool(value)


def _is_single_emoji(value: str) -> bool:
    """Close enough to Evolution's check: no ASCII, one grapheme-ish (an emoji plus modifiers)."""
    return 0 < len(value) <= 8 and all(ord(ch) > 0x7F for ch in value)


def _target(body: dict[str, Any]) -> tuple[str, str]:
    required(body, "number")
    number = str(body["number"])
    return number, jid_of(number)


def _media_fields(media: str, mediatype: str, mimetype: str, file_name: str | None) -> dict[str, Any]:
    """The encrypted-media fields WhatsApp answers with; all opaque to the hub."""
    size = len(base64.b64decode(media)) if not HTTP_URL.match(media) else 184_213
    path = f"/o1/v/t24/f2/m238/AQ{secrets.token_hex(24)}?ccb=9-4&_nc_sid=e6ed6c"
    fields: dict[str, Any] = {
        "url": f"https://mmg.whatsapp.net{path}&mms3=true",
        "mimetype": mimetype,
        "fileSha256": index_bytes(32),
        "fileLength": long_value(size, unsigned=True),
        "mediaKey": index_bytes(32),
    }
    if file_name is not None:
        fields["fileName"] = file_name
    fields["fileEncSha256"] = index_bytes(32)
    fields["directPath"] = path
    fields["mediaKeyTimestamp"] = long_value(int(time.time()), unsigned=False)
    if mediatype == "image":
        fields.update(height=1280, width=960)
    if mediatype in ("audio", "video"):
        fields["seconds"] = 6
    return fields


def _vcard(card: dict[str, Any]) -> str:
    """The vCard Evolution builds for one `contact` entry of sendContact."""
    lines = ["BEGIN:VCARD", "VERSION:3.0", f"N:{card['fullName']}", f"FN:{card['fullName']}"]
    if card.get("organization"):
        lines.append(f"ORG:{card['organization']};")
    if card.get("email"):
        lines.append(f"EMAIL:{card['email']}")
    if card.get("url"):
        lines.append(f"URL:{card['url']}")
    lines += [f"item1.TEL;waid={card['wuid']}:{card['phoneNumber']}", "item1.X-ABLabel:Celular", "END:VCARD"]
    return "\n".join(lines)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class MessageEndpoints:
    """`/message/sendText|sendMedia|sendWhatsAppAudio|sendSticker|sendReaction|sendLocation|sendContact`, the
    `/chat/*` actions, and `/__sim/profiles` (what `/chat/fetchProfile` answers for a number)."""

    def __init__(
        self,
        state: EvolutionState,
        webhooks: WebhookDelivery,
        on_sent: Callable[[Instance, SentMessage], None] | None = None,
    ) -> None:
        self._state = state
        self._webhooks = webhooks
        self._on_sent = on_sent
        """Called after each recorded send (the receipts' hook, `receipts.ReceiptEmitter.after_send`)."""
        self.profiles: dict[str, dict[str, Any]] = {}
        """Profile fields by JID, set through `POST /__sim/profiles`; other numbers get a plain default profile."""

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/message/sendText/{instance}", self._send_text),
            web.post("/message/sendMedia/{instance}", self._send_media),
            web.post("/message/sendWhatsAppAudio/{instance}", self._send_audio),
            web.post("/message/sendSticker/{instance}", self._send_sticker),
            web.post("/message/sendReaction/{instance}", self._send_reaction),
            web.post("/message/sendLocation/{instance}", self._send_location),
            web.post("/message/sendContact/{instance}", self._send_contact),
            web.post("/chat/fetchProfile/{instance}", self._fetch_profile),
            web.post("/__sim/profiles", self._set_profile),
            web.post("/chat/sendPresence/{instance}", self._send_presence),
            web.post("/chat/markMessageAsRead/{instance}", self._mark_read),
            web.post("/chat/findMessages/{instance}", self._find_messages),
            web.post("/chat/whatsappNumbers/{instance}", self._whatsapp_numbers),
        ]

    # ------------------------------------------------------------------ the send pipeline

    async def _send(self, request: web.Request, endpoint: str, build: Build) -> web.StreamResponse:
        """The shared send pipeline: auth → validation → reachability → latency → faults → record → answer."""
        state = self._state
        instance = authorize(state, request)
        body = await read_body(request)
        outgoing = build(instance, body)
        if outgoing.remote_jid in state.not_on_whatsapp or outgoing.remote_jid.split("@")[0] in state.not_on_whatsapp:
            number = outgoing.remote_jid.split("@")[0]
            raise EvolutionError(400, [{"jid": outgoing.remote_jid, "exists": False, "number": number}])
        if instance.state != "open":
            raise EvolutionError(500, "Connection Closed")
        if state.honor_delays and isinstance(body.get("delay"), int | float) and body["delay"] > 0:
            await asyncio.sleep(body["delay"] / 1000)
        if state.latency:
            await asyncio.sleep(state.latency)
        fault = state.next_fault()
        if fault is not None and not fault.after_send:
            return await self._fault_response(fault, instance.name)
        sent = self._record(instance, endpoint, body, outgoing)
        if fault is not None:
            return await self._fault_response(fault, instance.name)
        return json_response(sent.raw, 201)

    @staticmethod
    async def _fault_response(fault: Fault, instance: str) -> web.Response:
        if fault.delay:
            await asyncio.sleep(fault.delay)
        headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else None
        if fault.body is None:
            message = default_error_message(fault.status, instance)
            return json_response(error_body(fault.status, message), fault.status, headers)
        if isinstance(fault.body, str):
            return web.Response(text=fault.body, status=fault.status, headers=headers)
        return json_response(fault.body, fault.status, headers)

    def _record(self, instance: Instance, endpoint: str, body: dict[str, Any], outgoing: Outgoing) -> SentMessage:
        key_id = new_send_id()
        now = int(time.time())
        raw: dict[str, Any] = {
            "key": {"remoteJid": outgoing.remote_jid, "fromMe": True, "id": key_id},
            "pushName": OWN_PUSH_NAME,
            "status": "PENDING",
            "message": outgoing.message,
        }
        context = dict(outgoing.context_info or {})
        if not outgoing.remote_jid.endswith("@g.us") and endpoint != "sendReaction":
            # Evolution adds its ephemeral-settings contextInfo to every 1:1 send (fixture send-text.json).
            for name, value in send_context_info(now).items():
                context.setdefault(name, value)
        if context:
            raw["contextInfo"] = context
        raw["messageType"] = message_type_of(outgoing.message)
        raw["messageTimestamp"] = now
        raw["instanceId"] = instance.instance_id
        raw["source"] = "web"
        sent = SentMessage(
            instance=instance.name,
            endpoint=endpoint,
            number=outgoing.number,
            text=outgoing.text,
            body=body,
            key_id=key_id,
            timestamp=now,
            remote_jid=outgoing.remote_jid,
            raw=raw,
            record_id=new_record_id(),
        )
        self._state.record_sent(sent)
        hook = instance.webhook
        if hook is not None and hook.get("enabled"):
            data = raw
            if outgoing.base64_media is not None and hook.get("webhookBase64"):
                data = {**raw, "message": {**raw["message"], "base64": outgoing.base64_media}}
            self._webhooks.emit(instance, "send.message", data)
        if self._on_sent is not None:
            self._on_sent(instance, sent)
        return sent

    def _quote_context(self, body: dict[str, Any], remote_jid: str, instance: Instance) -> dict[str, Any] | None:
        """`quoted` and `mentioned` → contextInfo; a quote whose message cannot be found is dropped (§4.3)."""
        context: dict[str, Any] = {}
        quoted = body.get("quoted")
        if isinstance(quoted, dict) and isinstance(quoted.get("key"), dict) and quoted["key"].get("id"):
            qkey = quoted["key"]
            quoted_message = quoted.get("message")
            if not isinstance(quoted_message, dict):
                found = next((s for s in reversed(self._state.sent) if s.key_id == qkey["id"]), None)
                quoted_message = found.raw["message"] if found is not None else None
            if quoted_message is not None:
                author = instance.owner_jid if qkey.get("fromMe") else qkey.get("participant") or qkey.get("remoteJid")
                context.update(stanzaId=qkey["id"], participant=author or remote_jid, quotedMessage=quoted_message)
        mentioned = body.get("mentioned")
        if isinstance(mentioned, list) and mentioned:
            context["mentionedJid"] = [jid_of(str(n)) for n in mentioned]
        return context or None

    # ------------------------------------------------------------------ sends

    async def _send_text(self, request: web.Request) -> web.StreamResponse:
        def build(instance: Instance, body: dict[str, Any]) -> Outgoing:
            number, remote_jid = _target(body)
            required(body, "text")
            text = body["text"]
            if not isinstance(text, str) or not text.strip():
                raise EvolutionError(400, ["Text is required"])
            context = self._quote_context(body, remote_jid, instance)
            return Outgoing(number, text, remote_jid, {"conversation": text}, context)

        return await self._send(request, "sendText", build)

    async def _send_media(self, request: web.Request) -> web.StreamResponse:
        def build(instance: Instance, body: dict[str, Any]) -> Outgoing:
            number, remote_jid = _target(body)
            required(body, "mediatype", "media")
            mediatype, media = body["mediatype"], body["media"]
            if mediatype not in _MEDIA_TYPES:
                raise EvolutionError(400, ["instance.mediatype must be equal to one of the allowed values"])
            is_url = isinstance(media, str) and bool(HTTP_URL.match(media))
            if not isinstance(media, str) or not (is_url or _is_base64(media)):
                raise EvolutionError(400, ["Owned media must be a url or base64"])
            file_name = body.get("fileName")
            if mediatype == "document" and not is_url and not file_name:
                raise EvolutionError(400, ["For base64 the file name must be informed."])
            guessed = mimetypes.guess_type(str(file_name))[0] if file_name else None
            mimetype = str(body.get("mimetype") or guessed or _DEFAULT_MIME[mediatype])
            fields = _media_fields(media, mediatype, mimetype, str(file_name) if file_name else None)
            caption = body.get("caption")
            if isinstance(caption, str) and caption and mediatype != "audio":
                fields["caption"] = caption
            context = self._quote_context(body, remote_jid, instance)
            message = {f"{mediatype}Message": fields}
            return Outgoing(number, str(caption or ""), remote_jid, message, context, None if is_url else media)

        return await self._send(request, "sendMedia", build)

    async def _send_audio(self, request: web.Request) -> web.StreamResponse:
        def build(instance: Instance, body: dict[str, Any]) -> Outgoing:
            number, remote_jid = _target(body)
            required(body, "audio")
            audio = body["audio"]
            is_url = isinstance(audio, str) and bool(HTTP_URL.match(audio))
            if not isinstance(audio, str) or not (is_url or _is_base64(audio)):
                raise EvolutionError(400, ["Owned media must be a url or base64"])
            fields = _media_fields(audio, "audio", "audio/ogg; codecs=opus", None)
            fields.update(ptt=True, waveform=index_bytes(64))
            message = {"audioMessage": fields}
            return Outgoing(number, "", remote_jid, message, None, None if is_url else audio)

        return await self._send(request, "sendWhatsAppAudio", build)

    async def _send_reaction(self, request: web.Request) -> web.StreamResponse:
        def build(instance: Instance, body: dict[str, Any]) -> Outgoing:
            required(body, "key", "reaction")
            key, reaction = body["key"], body["reaction"]
            if not isinstance(key, dict):
                raise EvolutionError(400, ["instance.key is not of a type(s) object"])
            for name in ("remoteJid", "fromMe", "id"):
                if key.get(name) is None or key.get(name) == "":
                    raise EvolutionError(400, [f'instance.key requires property "{name}"'])
            if not isinstance(reaction, str) or (reaction and not _is_single_emoji(reaction)):
                raise EvolutionError(400, ["Reaction must be a single emoji or empty string"])
            remote_jid = str(key["remoteJid"])
            message = {
                "reactionMessage": {
                    "key": key,
                    "text": reaction,
                    "senderTimestampMs": long_value(int(time.time() * 1000), unsigned=False),
                }
            }
            return Outgoing(remote_jid, reaction, remote_jid, message, None)

        return await self._send(request, "sendReaction", build)

    async def _send_location(self, request: web.Request) -> web.StreamResponse:
        def build(instance: Instance, body: dict[str, Any]) -> Outgoing:
            number, remote_jid = _target(body)
            required(body, "latitude", "longitude", "name", "address")
            for name in ("latitude", "longitude"):
                if not _is_number(body[name]):
                    raise EvolutionError(400, [f"instance.{name} is not of a type(s) number"])
            for name in ("name", "address"):
                if not isinstance(body[name], str):
                    raise EvolutionError(400, [f"instance.{name} is not of a type(s) string"])
            location = {
                "degreesLatitude": body["latitude"],
                "degreesLongitude": body["longitude"],
                "name": body["name"],
                "address": body["address"],
            }
            return Outgoing(number, str(body["name"]), remote_jid, {"locationMessage": location}, None)

        return await self._send(request, "sendLocation", build)

    async def _send_sticker(self, request: web.Request) -> web.StreamResponse:
        def build(instance: Instance, body: dict[str, Any]) -> Outgoing:
            number, remote_jid = _target(body)
            required(body, "sticker")
            sticker = body["sticker"]
            is_url = isinstance(sticker, str) and bool(HTTP_URL.match(sticker))
            if not isinstance(sticker, str) or not (is_url or _is_base64(sticker)):
                raise EvolutionError(400, ["Owned media must be a url or base64"])
            fields = _media_fields(sticker, "sticker", "image/webp", None)
            fields.update(height=512, width=512, isAnimated=False, isAvatar=False)
            context = self._quote_context(body, remote_jid, instance)
            return Outgoing(number, "", remote_jid, {"stickerMessage": fields}, context, None if is_url else sticker)

        return await self._send(request, "sendSticker", build)

    async def _send_contact(self, request: web.Request) -> web.StreamResponse:
        def build(instance: Instance, body: dict[str, Any]) -> Outgoing:
            number, remote_jid = _target(body)
            required(body, "contact")
            cards = body["contact"]
            if not isinstance(cards, list) or not cards:
                raise EvolutionError(400, ["instance.contact does not meet minimum length of 1"])
            for index, card in enumerate(cards):
                if not isinstance(card, dict):
                    raise EvolutionError(400, [f"instance.contact[{index}] is not of a type(s) object"])
                for name in ("fullName", "wuid", "phoneNumber"):
                    if not isinstance(card.get(name), str) or not card[name]:
                        raise EvolutionError(400, [f'instance.contact[{index}] requires property "{name}"'])
            message: dict[str, Any]
            if len(cards) == 1:
                message = {"contactMessage": {"displayName": cards[0]["fullName"], "vcard": _vcard(cards[0])}}
            else:
                entries = [{"displayName": card["fullName"], "vcard": _vcard(card)} for card in cards]
                message = {"contactsArrayMessage": {"displayName": f"{len(cards)} contacts", "contacts": entries}}
            names = ", ".join(str(card["fullName"]) for card in cards)
            return Outgoing(number, names, remote_jid, message, self._quote_context(body, remote_jid, instance))

        return await self._send(request, "sendContact", build)

    # ------------------------------------------------------------------ chat

    async def _fetch_profile(self, request: web.Request) -> web.StreamResponse:
        """`chat/fetchProfile`: a number without WhatsApp is 400 `exists:false` (as every send), else 200 with the
        fields Evolution's `fetchProfile` assembles (`status` is Baileys' `{status, setAt}`)."""
        authorize(self._state, request)
        body = await read_body(request)
        required(body, "number")
        jid = jid_of(str(body["number"]))
        digits = jid.split("@")[0]
        if jid in self._state.not_on_whatsapp or digits in self._state.not_on_whatsapp:
            raise EvolutionError(400, [{"jid": jid, "exists": False, "number": digits}])
        fault = self._state.next_fault()
        if fault is not None:
            return await self._fault_response(fault, request.match_info["instance"])
        profile: dict[str, Any] = {
            "wuid": jid,
            "name": None,
            "numberExists": True,
            "picture": None,
            "status": {"status": "Hey there! I am using WhatsApp.", "setAt": "2025-12-05T14:32:10.000Z"},
            "isBusiness": False,
            "email": None,
            "description": None,
            "website": None,
        }
        profile.update(self.profiles.get(jid, {}))
        return json_response(profile)

    async def _set_profile(self, request: web.Request) -> web.StreamResponse:
        """Control: `{number, ...fields}` sets what fetchProfile answers for that number (merged over the default)."""
        body = await read_body(request)
        required(body, "number")
        jid = jid_of(str(body.pop("number")))
        self.profiles[jid] = body
        return json_response({"wuid": jid, **body}, 201)

    async def _send_presence(self, request: web.Request) -> web.StreamResponse:
        instance = authorize(self._state, request)
        body = await read_body(request)
        required(body, "number", "presence", "delay")
        if body["presence"] not in _PRESENCES:
            raise EvolutionError(400, ["instance.presence must be equal to one of the allowed values"])
        self._state.presences.append({"instance": instance.name, **body})
        if self._state.honor_delays and isinstance(body["delay"], int | float) and body["delay"] > 0:
            await asyncio.sleep(body["delay"] / 1000)
        return json_response({"presence": body["presence"]}, 201)

    async def _mark_read(self, request: web.Request) -> web.StreamResponse:
        instance = authorize(self._state, request)
        body = await read_body(request)
        required(body, "readMessages")
        if not isinstance(body["readMessages"], list):
            raise EvolutionError(400, ["instance.readMessages must be array"])
        for key in body["readMessages"]:
            if isinstance(key, dict):
                self._state.reads.append({"instance": instance.name, **key})
        return json_response({"message": "Read messages", "read": "success"}, 201)

    async def _find_messages(self, request: web.Request) -> web.StreamResponse:
        """§4.5: filter the recorded sends, newest first, paged with `offset` as the page size."""
        instance = authorize(self._state, request)
        body = await read_body(request)
        where = body.get("where") if isinstance(body.get("where"), dict) else {}
        assert isinstance(where, dict)
        key = where.get("key") if isinstance(where.get("key"), dict) else {}
        assert isinstance(key, dict)
        span = where.get("messageTimestamp") if isinstance(where.get("messageTimestamp"), dict) else {}
        assert isinstance(span, dict)
        gte, lte = parse_iso(span.get("gte")), parse_iso(span.get("lte"))

        def matches(sent: SentMessage) -> bool:
            raw_key = sent.raw["key"]
            if sent.instance != instance.name:
                return False
            for name in ("remoteJid", "remoteJidAlt", "id", "participant"):
                if key.get(name) is not None and raw_key.get(name) != key[name]:
                    return False
            if key.get("fromMe") is True and raw_key.get("fromMe") is not True:
                return False
            if where.get("messageType") is not None and sent.raw["messageType"] != where["messageType"]:
                return False
            if where.get("source") is not None and sent.raw["source"] != where["source"]:
                return False
            return (gte is None or sent.timestamp >= gte) and (lte is None or sent.timestamp <= lte)

        found = sorted((s for s in reversed(self._state.sent) if matches(s)), key=lambda s: -s.timestamp)
        page = max(1, int(body.get("page") or 1))
        size = max(1, int(body.get("offset") or 50))
        records = [
            {
                "id": s.record_id,
                "key": s.raw["key"],
                "pushName": s.raw["pushName"],
                "messageType": s.raw["messageType"],
                "message": s.raw["message"],
                "messageTimestamp": s.timestamp,
                "instanceId": s.raw["instanceId"],
                "source": s.raw["source"],
                "contextInfo": s.raw.get("contextInfo"),
                "MessageUpdate": [],
            }
            for s in found[(page - 1) * size : page * size]
        ]
        total = len(found)
        result = {"total": total, "pages": math.ceil(total / size), "currentPage": page, "records": records}
        return json_response({"messages": result})

    async def _whatsapp_numbers(self, request: web.Request) -> web.StreamResponse:
        authorize(self._state, request)
        body = await read_body(request)
        required(body, "numbers")
        answers = []
        for number in body["numbers"] if isinstance(body["numbers"], list) else []:
            jid = jid_of(str(number))
            digits = jid.split("@")[0]
            exists = jid not in self._state.not_on_whatsapp and digits not in self._state.not_on_whatsapp
            answers.append({"jid": jid, "exists": exists, "number": str(number)})
        return json_response(answers)
