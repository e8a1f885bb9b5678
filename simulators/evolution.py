"""A local Evolution API v2.3.x server for tests, demos and benchmarks.

It speaks the real wire protocol of /work/shared/evolution/CONTRACT.md (REST in §4, `send.message` webhooks
in §1/§3), so the hub's Evolution client is exercised exactly as against a real server, without WhatsApp and
without the internet. On top of the protocol it records every send and lets a test inject the failures the hub
must survive: 4xx/5xx answers, 429 with Retry-After, slow answers (client timeouts) and the nasty
"the message went out but the answer never came back" case (`after_send=True`), which the hub reconciles
through `POST /chat/findMessages`.

Run it out of process with `python -m simulators.evolution --port 8080 --instance acme-support:TOKEN`; the
`/__sim/*` control endpoints (no auth) then give the same powers as the Python API.

Deliberate simplifications: sends succeed at once (the `delay` field is honoured only with
`honor_delays=True`), each webhook is POSTed once (no retries), numbers are not 9th-digit normalized,
and only messages sent through the API are stored for `findMessages`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import logging
import math
import mimetypes
import re
import secrets
import sys
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from servicekit.runner import run, stop_signal
from simulators.evolution_wire import (
    ALL_EVENTS,
    OWN_PUSH_NAME,
    TINY_PNG_BASE64,
    by_events_suffix,
    default_error_message,
    envelope,
    error_body,
    index_bytes,
    instance_uuid,
    iso_now,
    jid_of,
    long_value,
    message_type_of,
    new_record_id,
    new_send_id,
    parse_iso,
    post_webhook,
    send_context_info,
    subscription_name,
    text_upsert,
    webhook_headers,
)

__all__ = ["EvolutionError", "EvolutionSimulator", "SentMessage", "main", "post_webhook", "text_upsert"]

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_PRESENCES = ("composing", "recording", "paused", "available", "unavailable")
_MEDIA_TYPES = ("image", "video", "document", "audio")
_DEFAULT_MIME = {"image": "image/jpeg", "video": "video/mp4", "document": "application/pdf", "audio": "audio/mpeg"}
_URL = re.compile(r"^https?://", re.IGNORECASE)


@dataclass
class SentMessage:
    """One accepted send, as WhatsApp would have received it."""

    instance: str
    endpoint: str
    """The REST action: `sendText`, `sendMedia`, `sendWhatsAppAudio`, `sendReaction`, `sendLocation`."""
    number: str
    """The `number` field as the client sent it (for reactions: the reacted message's `remoteJid`)."""
    text: str
    """Text, caption, reaction emoji or location name; empty for captionless media and audio."""
    body: dict[str, Any]
    key_id: str
    timestamp: int
    remote_jid: str
    raw: dict[str, Any] = field(default_factory=dict)
    """The MessageRaw answered to the client (and posted as `send.message`)."""
    record_id: str = ""
    received_at: float = field(default_factory=time.time)
    """Wall-clock time the simulator accepted the send (the benchmark's end-to-end clock)."""
    """The database row id `findMessages` reports."""


class EvolutionError(Exception):
    """An Evolution error answer: rendered as `{"status", "error", "response": {"message"}}` (§4.2)."""

    def __init__(self, status: int, message: Any) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


@dataclass(frozen=True)
class _Fault:
    """One injected send failure (see `EvolutionSimulator.fail_next`)."""

    status: int
    body: Any
    retry_after: float | None
    delay: float
    after_send: bool


@dataclass
class _Instance:
    """A simulated WhatsApp connection."""

    name: str
    token: str
    state: str
    instance_id: str
    owner_jid: str
    profile_name: str
    created_at: str
    webhook: dict[str, Any] | None = None
    qr_count: int = 0


@dataclass(frozen=True)
class _Outgoing:
    """What a send endpoint validated and is about to deliver."""

    number: str
    text: str
    remote_jid: str
    message: dict[str, Any]
    context_info: dict[str, Any] | None
    base64_media: str | None = None


def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status, content_type="application/json", headers=headers)


def _required(body: dict[str, Any], *names: str) -> None:
    """Schema check: the exact message Evolution's JSON Schema validator gives for a missing property."""
    for name in names:
        if name not in body or body[name] is None:
            raise EvolutionError(400, [f'instance requires property "{name}"'])


def _is_base64(value: str) -> bool:
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return False
    return bool(value)


def _is_single_emoji(value: str) -> bool:
    """Close enough to Evolution's check: no ASCII, one grapheme-ish (an emoji plus modifiers)."""
    return 0 < len(value) <= 8 and all(ord(ch) > 0x7F for ch in value)


class EvolutionSimulator:
    """An in-process Evolution API server with recording and fault injection.

    Instances are created with `add_instance` (or `POST /instance/create`). Every request is authenticated
    like the real server: an unknown instance is 404 before the `apikey` is looked at, then the global key
    or the instance's own token is required.
    """

    def __init__(self, *, api_key: str = "sim-global-key", honor_delays: bool = False) -> None:
        """Args:
        api_key: The global `AUTHENTICATION_API_KEY`.
        honor_delays: Hold sends and presences open for their `delay` ms as Evolution does (off by default
            to keep tests fast).
        """
        self.api_key = api_key
        self.honor_delays = honor_delays
        self.url = ""
        self.sent: list[SentMessage] = []
        self.presences: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str]] = []
        self.reads: list[dict[str, Any]] = []
        """Every key passed to `markMessageAsRead` (+ `instance`)."""
        self.deliveries: list[dict[str, Any]] = []
        """Every webhook POST attempt: `{event, instance, url, status}` (status None when it failed to connect)."""
        self.not_on_whatsapp: set[str] = set()
        """Numbers (digits) or JIDs that answer 400 `exists:false`, as for a number without WhatsApp."""
        self._instances: dict[str, _Instance] = {}
        self._faults: deque[_Fault] = deque()
        self._latency = 0.0
        self._sent_signal = asyncio.Event()
        self._tasks: set[asyncio.Task[int | None]] = set()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Serve on `host:port` (0 picks a free port); `url` is set when this returns."""
        self._runner = web.AppRunner(self._build_app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound_port = self._runner.addresses[0][1]
        self.url = f"http://{host}:{bound_port}"
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))

    async def stop(self) -> None:
        """Stop serving; webhook deliveries still in flight are cancelled."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ------------------------------------------------------------------ control API

    def add_instance(self, name: str, token: str | None = None, state: str = "open") -> str:
        """Create (or update) an instance and return its token; an existing instance keeps its webhook."""
        existing = self._instances.get(name)
        if existing is not None:
            existing.token = token or existing.token
            existing.state = state
            return existing.token
        created = _Instance(
            name=name,
            token=token or str(uuid.uuid4()).upper(),
            state=state,
            instance_id=instance_uuid(name),
            owner_jid="5511987650000@s.whatsapp.net",
            profile_name=name,
            created_at=iso_now(),
        )
        self._instances[name] = created
        return created.token

    def set_state(self, name: str, state: str) -> None:
        """Move an instance to `open`/`connecting`/`close` and emit `connection.update` if subscribed."""
        instance = self._instances[name]
        instance.state = state
        self._emit(instance, "connection.update", self._connection_data(instance))

    def webhook_of(self, name: str) -> dict[str, Any] | None:
        """The stored webhook row of an instance (what `GET /webhook/find` answers)."""
        return self._instances[name].webhook

    def fail_next(
        self,
        count: int,
        status: int = 500,
        body: Any | None = None,
        retry_after: float | None = None,
        delay: float = 0.0,
        after_send: bool = False,
    ) -> None:
        """Make the next `count` sends (after auth and validation) fail.

        Args:
            count: How many consecutive sends fail.
            status: HTTP status of the failure.
            body: The whole response body (dict/list → JSON, str → raw text); the contract's error shape for
                `status` when None.
            retry_after: Seconds for a `Retry-After` header (formatted with `%g`, so 0.5 stays "0.5").
            delay: Seconds to sleep before answering, to provoke client timeouts.
            after_send: Record the message as sent (and post `send.message`) before failing: the
                "WhatsApp got it but the answer was lost" case.
        """
        fault = _Fault(status=status, body=body, retry_after=retry_after, delay=delay, after_send=after_send)
        self._faults.extend([fault] * count)

    def set_latency(self, seconds: float) -> None:
        """Add `seconds` of latency to every send."""
        self._latency = max(0.0, seconds)

    def reset(self) -> None:
        """Forget recorded traffic, pending faults and latency; instances and their webhooks stay."""
        self.sent.clear()
        self.presences.clear()
        self.requests.clear()
        self.reads.clear()
        self.deliveries.clear()
        self.not_on_whatsapp.clear()
        self._faults.clear()
        self._latency = 0.0

    async def wait_for_sent(self, count: int, timeout: float = 5.0) -> list[SentMessage]:
        """Wait until at least `count` messages were sent; raise TimeoutError otherwise."""
        async with asyncio.timeout(timeout):
            while len(self.sent) < count:
                self._sent_signal.clear()
                await self._sent_signal.wait()
        return list(self.sent)

    async def emit(self, name: str, event: str, data: Any) -> int | None:
        """POST an arbitrary event (e.g. a `messages.update` receipt) to the instance webhook and wait.

        Returns the HTTP status, or None when the instance has no enabled webhook subscribed to `event` or
        the POST failed.
        """
        instance = self._instances[name]
        target = self._webhook_target(instance, event, data)
        if target is None:
            return None
        url, body, headers = target
        return await self._deliver(instance.name, event, url, body, headers)

    # ------------------------------------------------------------------ app

    def _build_app(self) -> web.Application:
        @web.middleware
        async def evolution_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
            if not request.path.startswith("/__sim/"):
                self.requests.append((request.method, request.path))
            try:
                return await handler(request)
            except EvolutionError as exc:
                return _json(error_body(exc.status, exc.message), exc.status)
            except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
                return _json(error_body(404, [f"Cannot {request.method} {request.path}"]), 404)

        app = web.Application(middlewares=[evolution_errors], client_max_size=136 * 1024 * 1024)
        app.router.add_get("/", self._welcome)
        app.router.add_post("/message/sendText/{instance}", self._send_text)
        app.router.add_post("/message/sendMedia/{instance}", self._send_media)
        app.router.add_post("/message/sendWhatsAppAudio/{instance}", self._send_audio)
        app.router.add_post("/message/sendReaction/{instance}", self._send_reaction)
        app.router.add_post("/message/sendLocation/{instance}", self._send_location)
        app.router.add_post("/chat/sendPresence/{instance}", self._send_presence)
        app.router.add_post("/chat/markMessageAsRead/{instance}", self._mark_read)
        app.router.add_post("/chat/findMessages/{instance}", self._find_messages)
        app.router.add_post("/chat/whatsappNumbers/{instance}", self._whatsapp_numbers)
        app.router.add_get("/instance/connectionState/{instance}", self._connection_state)
        app.router.add_get("/instance/connect/{instance}", self._connect)
        app.router.add_post("/instance/create", self._create)
        app.router.add_get("/instance/fetchInstances", self._fetch_instances)
        app.router.add_delete("/instance/logout/{instance}", self._logout)
        app.router.add_delete("/instance/delete/{instance}", self._delete)
        app.router.add_post("/instance/restart/{instance}", self._restart)
        app.router.add_post("/webhook/set/{instance}", self._webhook_set)
        app.router.add_get("/webhook/find/{instance}", self._webhook_find)
        app.router.add_get("/__sim/sent", self._sim_sent)
        app.router.add_get("/__sim/presences", self._sim_presences)
        app.router.add_get("/__sim/requests", self._sim_requests)
        app.router.add_post("/__sim/fail", self._sim_fail)
        app.router.add_post("/__sim/latency", self._sim_latency)
        app.router.add_post("/__sim/reset", self._sim_reset)
        app.router.add_post("/__sim/instances", self._sim_instances)
        return app

    # ------------------------------------------------------------------ guards and bodies

    def _authorize(self, request: web.Request) -> _Instance:
        """Guard order of the real server: instance exists (404) → apikey (401)."""
        name = request.match_info["instance"]
        instance = self._instances.get(name)
        if instance is None:
            raise EvolutionError(404, [f'The "{name}" instance does not exist'])
        key = request.headers.get("apikey")
        if key != self.api_key and key != instance.token:
            raise EvolutionError(401, "Unauthorized")
        return instance

    def _require_global_key(self, request: web.Request) -> None:
        if request.headers.get("apikey") != self.api_key:
            raise EvolutionError(401, "Unauthorized")

    @staticmethod
    async def _body(request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        if not raw:
            return {}
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise EvolutionError(400, ["Invalid format"]) from None
        if not isinstance(body, dict):
            raise EvolutionError(400, ["Invalid format"])
        return body

    # ------------------------------------------------------------------ sends

    async def _send(
        self, request: web.Request, endpoint: str, build: Callable[[_Instance, dict[str, Any]], _Outgoing]
    ) -> web.StreamResponse:
        """The shared send pipeline: auth → validation → reachability → latency → faults → record → answer."""
        instance = self._authorize(request)
        body = await self._body(request)
        outgoing = build(instance, body)
        if outgoing.remote_jid in self.not_on_whatsapp or outgoing.remote_jid.split("@")[0] in self.not_on_whatsapp:
            number = outgoing.remote_jid.split("@")[0]
            raise EvolutionError(400, [{"jid": outgoing.remote_jid, "exists": False, "number": number}])
        if instance.state != "open":
            raise EvolutionError(500, "Connection Closed")
        if self.honor_delays and isinstance(body.get("delay"), int | float) and body["delay"] > 0:
            await asyncio.sleep(body["delay"] / 1000)
        if self._latency:
            await asyncio.sleep(self._latency)
        fault = self._faults.popleft() if self._faults else None
        if fault is not None and not fault.after_send:
            return await self._fault_response(fault, instance.name)
        sent = self._record(instance, endpoint, body, outgoing)
        if fault is not None:
            return await self._fault_response(fault, instance.name)
        return _json(sent.raw, 201)

    async def _fault_response(self, fault: _Fault, instance: str) -> web.Response:
        if fault.delay:
            await asyncio.sleep(fault.delay)
        headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else None
        if fault.body is None:
            return _json(error_body(fault.status, default_error_message(fault.status, instance)), fault.status, headers)
        if isinstance(fault.body, str):
            return web.Response(text=fault.body, status=fault.status, headers=headers)
        return _json(fault.body, fault.status, headers)

    def _record(self, instance: _Instance, endpoint: str, body: dict[str, Any], outgoing: _Outgoing) -> SentMessage:
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
        self.sent.append(sent)
        self._sent_signal.set()
        hook = instance.webhook
        if hook is not None and hook.get("enabled"):
            data = raw
            if outgoing.base64_media is not None and hook.get("webhookBase64"):
                data = {**raw, "message": {**raw["message"], "base64": outgoing.base64_media}}
            self._emit(instance, "send.message", data)
        return sent

    def _quote_context(self, body: dict[str, Any], remote_jid: str, instance: _Instance) -> dict[str, Any] | None:
        """`quoted` and `mentioned` → contextInfo; a quote whose message cannot be found is dropped (§4.3)."""
        context: dict[str, Any] = {}
        quoted = body.get("quoted")
        if isinstance(quoted, dict) and isinstance(quoted.get("key"), dict) and quoted["key"].get("id"):
            qkey = quoted["key"]
            quoted_message = quoted.get("message")
            if not isinstance(quoted_message, dict):
                found = next((s for s in reversed(self.sent) if s.key_id == qkey["id"]), None)
                quoted_message = found.raw["message"] if found is not None else None
            if quoted_message is not None:
                author = instance.owner_jid if qkey.get("fromMe") else qkey.get("participant") or qkey.get("remoteJid")
                context.update(stanzaId=qkey["id"], participant=author or remote_jid, quotedMessage=quoted_message)
        mentioned = body.get("mentioned")
        if isinstance(mentioned, list) and mentioned:
            context["mentionedJid"] = [jid_of(str(n)) for n in mentioned]
        return context or None

    def _target(self, body: dict[str, Any]) -> tuple[str, str]:
        _required(body, "number")
        number = str(body["number"])
        return number, jid_of(number)

    async def _send_text(self, request: web.Request) -> web.StreamResponse:
        def build(instance: _Instance, body: dict[str, Any]) -> _Outgoing:
            number, remote_jid = self._target(body)
            _required(body, "text")
            text = body["text"]
            if not isinstance(text, str) or not text.strip():
                raise EvolutionError(400, ["Text is required"])
            context = self._quote_context(body, remote_jid, instance)
            return _Outgoing(number, text, remote_jid, {"conversation": text}, context)

        return await self._send(request, "sendText", build)

    @staticmethod
    def _media_fields(media: str, mediatype: str, mimetype: str, file_name: str | None) -> dict[str, Any]:
        """The encrypted-media fields WhatsApp answers with; all opaque to the hub."""
        size = len(base64.b64decode(media)) if not _URL.match(media) else 184_213
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

    async def _send_media(self, request: web.Request) -> web.StreamResponse:
        def build(instance: _Instance, body: dict[str, Any]) -> _Outgoing:
            number, remote_jid = self._target(body)
            _required(body, "mediatype", "media")
            mediatype, media = body["mediatype"], body["media"]
            if mediatype not in _MEDIA_TYPES:
                raise EvolutionError(400, ["instance.mediatype must be equal to one of the allowed values"])
            is_url = isinstance(media, str) and bool(_URL.match(media))
            if not isinstance(media, str) or not (is_url or _is_base64(media)):
                raise EvolutionError(400, ["Owned media must be a url or base64"])
            file_name = body.get("fileName")
            if mediatype == "document" and not is_url and not file_name:
                raise EvolutionError(400, ["For base64 the file name must be informed."])
            guessed = mimetypes.guess_type(str(file_name))[0] if file_name else None
            mimetype = str(body.get("mimetype") or guessed or _DEFAULT_MIME[mediatype])
            fields = self._media_fields(media, mediatype, mimetype, str(file_name) if file_name else None)
            caption = body.get("caption")
            if isinstance(caption, str) and caption and mediatype != "audio":
                fields["caption"] = caption
            context = self._quote_context(body, remote_jid, instance)
            message = {f"{mediatype}Message": fields}
            return _Outgoing(number, str(caption or ""), remote_jid, message, context, None if is_url else media)

        return await self._send(request, "sendMedia", build)

    async def _send_audio(self, request: web.Request) -> web.StreamResponse:
        def build(instance: _Instance, body: dict[str, Any]) -> _Outgoing:
            number, remote_jid = self._target(body)
            _required(body, "audio")
            audio = body["audio"]
            is_url = isinstance(audio, str) and bool(_URL.match(audio))
            if not isinstance(audio, str) or not (is_url or _is_base64(audio)):
                raise EvolutionError(400, ["Owned media must be a url or base64"])
            fields = self._media_fields(audio, "audio", "audio/ogg; codecs=opus", None)
            fields.update(ptt=True, waveform=index_bytes(64))
            message = {"audioMessage": fields}
            return _Outgoing(number, "", remote_jid, message, None, None if is_url else audio)

        return await self._send(request, "sendWhatsAppAudio", build)

    async def _send_reaction(self, request: web.Request) -> web.StreamResponse:
        def build(instance: _Instance, body: dict[str, Any]) -> _Outgoing:
            _required(body, "key", "reaction")
            key, reaction = body["key"], body["reaction"]
            if not isinstance(key, dict) or not key.get("id") or not key.get("remoteJid"):
                raise EvolutionError(400, ['instance.key requires property "id"'])
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
            return _Outgoing(remote_jid, reaction, remote_jid, message, None)

        return await self._send(request, "sendReaction", build)

    async def _send_location(self, request: web.Request) -> web.StreamResponse:
        def build(instance: _Instance, body: dict[str, Any]) -> _Outgoing:
            number, remote_jid = self._target(body)
            _required(body, "latitude", "longitude", "name", "address")
            location = {
                "degreesLatitude": body["latitude"],
                "degreesLongitude": body["longitude"],
                "name": body["name"],
                "address": body["address"],
            }
            return _Outgoing(number, str(body["name"]), remote_jid, {"locationMessage": location}, None)

        return await self._send(request, "sendLocation", build)

    # ------------------------------------------------------------------ chat

    async def _send_presence(self, request: web.Request) -> web.StreamResponse:
        instance = self._authorize(request)
        body = await self._body(request)
        _required(body, "number", "presence", "delay")
        if body["presence"] not in _PRESENCES:
            raise EvolutionError(400, ["instance.presence must be equal to one of the allowed values"])
        self.presences.append({"instance": instance.name, **body})
        if self.honor_delays and isinstance(body["delay"], int | float) and body["delay"] > 0:
            await asyncio.sleep(body["delay"] / 1000)
        return _json({"presence": body["presence"]}, 201)

    async def _mark_read(self, request: web.Request) -> web.StreamResponse:
        instance = self._authorize(request)
        body = await self._body(request)
        _required(body, "readMessages")
        if not isinstance(body["readMessages"], list):
            raise EvolutionError(400, ["instance.readMessages must be array"])
        for key in body["readMessages"]:
            if isinstance(key, dict):
                self.reads.append({"instance": instance.name, **key})
        return _json({"message": "Read messages", "read": "success"}, 201)

    async def _find_messages(self, request: web.Request) -> web.StreamResponse:
        """§4.5: filter the recorded sends, newest first, paged with `offset` as the page size."""
        instance = self._authorize(request)
        body = await self._body(request)
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

        found = sorted((s for s in reversed(self.sent) if matches(s)), key=lambda s: -s.timestamp)
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
        return _json({"messages": result})

    async def _whatsapp_numbers(self, request: web.Request) -> web.StreamResponse:
        self._authorize(request)
        body = await self._body(request)
        _required(body, "numbers")
        answers = []
        for number in body["numbers"] if isinstance(body["numbers"], list) else []:
            jid = jid_of(str(number))
            digits = jid.split("@")[0]
            exists = jid not in self.not_on_whatsapp and digits not in self.not_on_whatsapp
            answers.append({"jid": jid, "exists": exists, "number": str(number)})
        return _json(answers)

    # ------------------------------------------------------------------ instances

    async def _welcome(self, request: web.Request) -> web.StreamResponse:
        return _json(
            {
                "status": 200,
                "message": "Welcome to the Evolution API, it is working!",
                "version": "2.3.7",
                "clientName": "evolution_simulator",
                "manager": f"{self.url}/manager",
                "documentation": "https://doc.evolution-api.com",
            }
        )

    async def _connection_state(self, request: web.Request) -> web.StreamResponse:
        instance = self._authorize(request)
        return _json({"instance": {"instanceName": instance.name, "state": instance.state}})

    def _qr(self, instance: _Instance, number: str | None) -> dict[str, Any]:
        instance.qr_count += 1
        alphabet = "ABCDEFGHJKLMNPQRSTVWXYZ0123456789"
        return {
            "pairingCode": "".join(secrets.choice(alphabet) for _ in range(8)) if number else None,
            "code": "2@" + base64.b64encode(secrets.token_bytes(48)).decode() + "," + secrets.token_urlsafe(32),
            "base64": f"data:image/png;base64,{TINY_PNG_BASE64}",
            "count": instance.qr_count,
        }

    async def _connect(self, request: web.Request) -> web.StreamResponse:
        instance = self._authorize(request)
        if instance.state == "open":
            return _json({"instance": {"instanceName": instance.name, "state": "open"}})
        if instance.state == "close":
            self.set_state(instance.name, "connecting")
        qr = self._qr(instance, request.query.get("number"))
        self._emit(instance, "qrcode.updated", {"qrcode": {"instance": instance.name, **qr}})
        return _json(qr)

    async def _create(self, request: web.Request) -> web.StreamResponse:
        self._require_global_key(request)
        body = await self._body(request)
        _required(body, "instanceName")
        name = str(body["instanceName"])
        if body.get("integration") != "WHATSAPP-BAILEYS":
            raise EvolutionError(400, ["Invalid integration"])
        if name in self._instances:
            raise EvolutionError(403, [f'This name "{name}" is already in use.'])
        webhook = body.get("webhook")
        if isinstance(webhook, dict) and webhook.get("url") and not isinstance(webhook.get("events"), list):
            raise EvolutionError(400, ["TypeError: Cannot read properties of undefined (reading 'length')"])
        with_qr = bool(body.get("qrcode"))
        token = self.add_instance(name, str(body.get("token") or "") or None, "connecting" if with_qr else "close")
        instance = self._instances[name]
        webhook_summary: dict[str, Any] = {}
        if isinstance(webhook, dict) and webhook.get("url"):
            instance.webhook = self._webhook_row(instance, {**webhook, "enabled": True})
            webhook_summary = {
                "webhookUrl": instance.webhook["url"],
                "webhookHeaders": instance.webhook["headers"],
                "webhookByEvents": instance.webhook["webhookByEvents"],
                "webhookBase64": instance.webhook["webhookBase64"],
            }
        answer: dict[str, Any] = {
            "instance": {
                "instanceName": name,
                "instanceId": instance.instance_id,
                "integration": "WHATSAPP-BAILEYS",
                "webhookWaBusiness": None,
                "accessTokenWaBusiness": "",
                "status": instance.state,
            },
            "hash": token,
            "webhook": webhook_summary,
            "websocket": {},
            "rabbitmq": {},
            "nats": {},
            "sqs": {},
            "settings": {
                "rejectCall": bool(body.get("rejectCall", False)),
                "msgCall": str(body.get("msgCall", "")),
                "groupsIgnore": bool(body.get("groupsIgnore", False)),
                "alwaysOnline": bool(body.get("alwaysOnline", False)),
                "readMessages": bool(body.get("readMessages", False)),
                "readStatus": bool(body.get("readStatus", False)),
                "syncFullHistory": bool(body.get("syncFullHistory", False)),
                "wavoipToken": "",
            },
        }
        if with_qr:
            answer["qrcode"] = self._qr(instance, str(body["number"]) if body.get("number") else None)
        return _json(answer, 201)

    def _instance_row(self, instance: _Instance) -> dict[str, Any]:
        return {
            "id": instance.instance_id,
            "name": instance.name,
            "connectionStatus": instance.state,
            "ownerJid": instance.owner_jid if instance.state == "open" else None,
            "profileName": instance.profile_name,
            "profilePicUrl": None,
            "integration": "WHATSAPP-BAILEYS",
            "number": None,
            "businessId": None,
            "token": instance.token,
            "clientName": "evolution_simulator",
            "disconnectionReasonCode": None,
            "disconnectionObject": None,
            "disconnectionAt": None,
            "createdAt": instance.created_at,
            "updatedAt": instance.created_at,
            "Chatwoot": None,
            "Proxy": None,
            "Rabbitmq": None,
            "Nats": None,
            "Sqs": None,
            "Websocket": None,
            "Setting": None,
            "_count": {"Message": sum(1 for s in self.sent if s.instance == instance.name), "Contact": 0, "Chat": 0},
        }

    async def _fetch_instances(self, request: web.Request) -> web.StreamResponse:
        key = request.headers.get("apikey")
        if key == self.api_key:
            visible = list(self._instances.values())
        else:
            visible = [i for i in self._instances.values() if i.token == key]
            if not visible:
                raise EvolutionError(401, "Unauthorized")
        wanted_name, wanted_id = request.query.get("instanceName"), request.query.get("instanceId")
        if wanted_name is not None:
            visible = [i for i in visible if i.name == wanted_name]
            if not visible:
                raise EvolutionError(404, [f'The "{wanted_name}" instance does not exist'])
        if wanted_id is not None:
            visible = [i for i in visible if i.instance_id == wanted_id]
        return _json([self._instance_row(i) for i in visible])

    async def _logout(self, request: web.Request) -> web.StreamResponse:
        instance = self._authorize(request)
        if instance.state == "close":
            raise EvolutionError(400, [f'The "{instance.name}" instance is not connected'])
        self.set_state(instance.name, "close")
        return _json({"status": "SUCCESS", "error": False, "response": {"message": "Instance logged out"}})

    async def _delete(self, request: web.Request) -> web.StreamResponse:
        instance = self._authorize(request)
        del self._instances[instance.name]
        return _json({"status": "SUCCESS", "error": False, "response": {"message": "Instance deleted"}})

    async def _restart(self, request: web.Request) -> web.StreamResponse:
        """A connected instance reconnects at once with its stored credentials; a closed one needs a QR."""
        instance = self._authorize(request)
        if instance.state == "close":
            self.set_state(instance.name, "connecting")
        return _json({"instance": {"instanceName": instance.name, "status": "connecting"}})

    # ------------------------------------------------------------------ webhook config

    def _webhook_row(self, instance: _Instance, config: dict[str, Any]) -> dict[str, Any]:
        events = config.get("events") or []
        unknown = [e for e in events if e not in ALL_EVENTS]
        if unknown:
            raise EvolutionError(400, [f"webhook.events must be equal to one of the allowed values: {unknown[0]}"])
        enabled = bool(config.get("enabled"))
        if not enabled:
            events = []
        elif not events:
            events = list(ALL_EVENTS)
        now = iso_now()
        previous = instance.webhook or {}
        headers = config.get("headers")
        return {
            "id": previous.get("id") or new_record_id(),
            "url": str(config.get("url")),
            "headers": headers if isinstance(headers, dict) else {},
            "enabled": enabled,
            "events": list(events),
            "webhookByEvents": bool(config.get("byEvents", False)),
            "webhookBase64": bool(config.get("base64", False)),
            "createdAt": previous.get("createdAt") or now,
            "updatedAt": now,
            "instanceId": instance.instance_id,
        }

    async def _webhook_set(self, request: web.Request) -> web.StreamResponse:
        """§1.1: the v2 body is wrapped in `webhook`; a missing `events` crashes the real server (500)."""
        instance = self._authorize(request)
        body = await self._body(request)
        _required(body, "webhook")
        config = body["webhook"]
        if not isinstance(config, dict):
            raise EvolutionError(400, ["instance.webhook must be object"])
        for name in ("enabled", "url"):
            if name not in config:
                raise EvolutionError(400, [f'instance.webhook requires property "{name}"'])
        if not isinstance(config.get("events"), list):
            raise EvolutionError(500, ["TypeError: Cannot read properties of undefined (reading 'length')"])
        instance.webhook = self._webhook_row(instance, config)
        return _json(instance.webhook, 201)

    async def _webhook_find(self, request: web.Request) -> web.StreamResponse:
        instance = self._authorize(request)
        return _json(instance.webhook)

    # ------------------------------------------------------------------ webhook delivery

    def _connection_data(self, instance: _Instance) -> dict[str, Any]:
        if instance.state == "open":
            return {
                "instance": instance.name,
                "wuid": instance.owner_jid,
                "profileName": instance.profile_name,
                "profilePictureUrl": None,
                "state": "open",
                "statusReason": 200,
            }
        return {
            "instance": instance.name,
            "state": instance.state,
            "statusReason": 401 if instance.state == "close" else 200,
        }

    def _webhook_target(
        self, instance: _Instance, event: str, data: Any
    ) -> tuple[str, dict[str, Any], dict[str, str]] | None:
        """URL, envelope and headers for `event`, or None when the instance webhook would not send it."""
        hook = instance.webhook
        if hook is None or not hook.get("enabled") or subscription_name(event) not in hook["events"]:
            return None
        url = str(hook["url"])
        if not _URL.match(url):
            return None
        target = f"{url.rstrip('/')}/{by_events_suffix(event)}" if hook["webhookByEvents"] else url
        sender = instance.owner_jid if event != "qrcode.updated" else None
        body = envelope(event, instance.name, data, destination=url, sender=sender, server_url=self.url)
        return target, body, webhook_headers(hook.get("headers"))

    def _emit(self, instance: _Instance, event: str, data: Any) -> None:
        """Fire-and-forget: the POST runs in a background task and never delays the REST answer."""
        target = self._webhook_target(instance, event, data)
        if target is None or self._session is None:
            return
        url, body, headers = target
        task = asyncio.get_running_loop().create_task(self._deliver(instance.name, event, url, body, headers))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(
        self, instance: str, event: str, url: str, body: dict[str, Any], headers: dict[str, str]
    ) -> int | None:
        status: int | None = None
        if self._session is not None:
            try:
                async with self._session.post(url, data=orjson.dumps(body), headers=headers) as response:
                    await response.read()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                log.debug("webhook %s to %s failed: %s", event, url, exc)
        self.deliveries.append({"event": event, "instance": instance, "url": url, "status": status})
        return status

    # ------------------------------------------------------------------ /__sim control endpoints

    async def _sim_sent(self, request: web.Request) -> web.StreamResponse:
        return _json([asdict(s) for s in self.sent])

    async def _sim_presences(self, request: web.Request) -> web.StreamResponse:
        return _json(self.presences)

    async def _sim_requests(self, request: web.Request) -> web.StreamResponse:
        return _json([list(r) for r in self.requests])

    async def _sim_fail(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request)
        self.fail_next(
            int(body.get("count", 1)),
            status=int(body.get("status", 500)),
            body=body.get("body"),
            retry_after=float(body["retry_after"]) if body.get("retry_after") is not None else None,
            delay=float(body.get("delay", 0.0)),
            after_send=bool(body.get("after_send", False)),
        )
        return _json({"pending_faults": len(self._faults)})

    async def _sim_latency(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request)
        self.set_latency(float(body.get("seconds", 0.0)))
        return _json({"latency": self._latency})

    async def _sim_reset(self, request: web.Request) -> web.StreamResponse:
        self.reset()
        return _json({"reset": True})

    async def _sim_instances(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request)
        _required(body, "name")
        name = str(body["name"])
        token = self.add_instance(name, body.get("token"), str(body.get("state", "open")))
        return _json({"name": name, "token": token}, 201)


# ---------------------------------------------------------------------- CLI


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m simulators.evolution", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port (printed when ready)")
    parser.add_argument("--api-key", default="sim-global-key", help="the global AUTHENTICATION_API_KEY")
    parser.add_argument(
        "--instance",
        action="append",
        default=[],
        metavar="NAME[:TOKEN]",
        help="an open instance to create at start (repeatable); a token is generated when omitted",
    )
    parser.add_argument("--honor-delays", action="store_true", help="hold sends/presences open for their delay")
    return parser.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    simulator = EvolutionSimulator(api_key=args.api_key, honor_delays=args.honor_delays)
    for spec in args.instance:
        name, _, token = str(spec).partition(":")
        token = simulator.add_instance(name, token or None)
        print(f"instance {name} token {token}", file=sys.stderr, flush=True)
    await simulator.start(args.host, args.port)
    stopping = stop_signal()
    print(f"evolution simulator listening on {simulator.url}", flush=True)
    try:
        await stopping.wait()
    finally:
        await simulator.stop()


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of `python -m simulators.evolution`: serve until SIGINT/SIGTERM."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s evolution-simulator: %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        run(_serve(_parse_args(argv)))


if __name__ == "__main__":
    main()
