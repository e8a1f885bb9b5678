"""The REST API under `/api/v10`: what discord.py's HTTPClient calls to log in, send, type, open DMs and look up.

Errors are Discord's JSON bodies (`{"message", "code"[, "errors"]}`) with its status codes, so discord.py raises
the same exceptions (`LoginFailure`, `Forbidden`, `NotFound`, `HTTPException` with `.code`) as in production.
Message creates carry `X-RateLimit-*` headers from a per-(bot, channel) window and honour injected faults.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import BodyPartReader, web

from simulators.discord.gateway import Gateway
from simulators.discord.objects import (
    application_object,
    attachment_object,
    channel_object,
    current_user_object,
    guild_object,
    message_object,
    partial_guild_object,
    user_object,
)
from simulators.discord.state import Bot, Channel, Fault, SentMessage, SimState, StoredMessage
from simulators.discord.wire import (
    API_VERSION,
    CHANNEL_DM,
    MAX_CONTENT_LENGTH,
    MAX_EMBED_TOTAL,
    MAX_EMBEDS,
    DiscordHTTPError,
    form_error,
    generic_error,
    json_object,
    json_response,
    missing_access,
    unknown,
)

API_PREFIX = f"/api/v{API_VERSION}"
_MESSAGE_BUCKET = hashlib.sha1(b"POST /channels/{channel_id}/messages").hexdigest()[:32]
_USER_MENTION = re.compile(r"<@!?(\d{15,21})>")
_FILE_FIELD = re.compile(r"^files\[(\d+)\]$")


class RestApi:
    """Route handlers over a `SimState`; new messages are fanned out through the `Gateway`."""

    def __init__(
        self,
        state: SimState,
        gateway: Gateway,
        *,
        http_url: Callable[[], str],
        gateway_url: Callable[[], str],
        shards: int = 1,
        rate_limit: int = 1000,
        rate_limit_window: float = 1.0,
    ) -> None:
        self.state = state
        self.gateway = gateway
        self.http_url = http_url
        self.gateway_url = gateway_url
        self.shards = shards
        self.rate_limit = rate_limit
        self.rate_limit_window = rate_limit_window

    def add_routes(self, app: web.Application) -> None:
        """Register the API routes (and the attachment "CDN") on `app`."""
        p = API_PREFIX
        app.router.add_get(f"{p}/gateway", self.get_gateway)
        app.router.add_get(f"{p}/gateway/bot", self.get_gateway_bot)
        app.router.add_get(f"{p}/users/@me", self.get_current_user)
        app.router.add_get(f"{p}/users/@me/guilds", self.get_current_user_guilds)
        app.router.add_post(f"{p}/users/@me/channels", self.create_dm)
        app.router.add_get(f"{p}/users/{{user_id}}", self.get_user)
        app.router.add_get(f"{p}/oauth2/applications/@me", self.get_application)
        app.router.add_get(f"{p}/channels/{{channel_id}}", self.get_channel)
        app.router.add_get(f"{p}/channels/{{channel_id}}/messages", self.get_messages)
        app.router.add_post(f"{p}/channels/{{channel_id}}/messages", self.create_message)
        app.router.add_get(f"{p}/channels/{{channel_id}}/messages/{{message_id}}", self.get_message)
        app.router.add_post(f"{p}/channels/{{channel_id}}/typing", self.trigger_typing)
        app.router.add_get(f"{p}/guilds/{{guild_id}}", self.get_guild)
        app.router.add_get(f"{p}/guilds/{{guild_id}}/channels", self.get_guild_channels)
        app.router.add_get("/attachments/{channel_id}/{attachment_id}/{filename}", self.get_attachment)

    # ------------------------------------------------------------------ guards

    def _bot(self, request: web.Request) -> Bot:
        """`Authorization: Bot <token>` with a live token, else 401 (discord.py's `LoginFailure` at login)."""
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        bot = self.state.bot_of_token(token.strip()) if scheme == "Bot" else None
        if bot is None:
            raise generic_error(401)
        return bot

    def _channel(self, request: web.Request, bot: Bot) -> Channel:
        channel = self.state.channels.get(request.match_info["channel_id"])
        if channel is None:
            raise unknown("Channel")
        if not self.state.can_access(bot.id, channel):
            raise missing_access()
        return channel

    @staticmethod
    async def _json(request: web.Request) -> dict[str, Any]:
        try:
            return await json_object(request)
        except ValueError:
            raise DiscordHTTPError(400, 50109, "The request body contains invalid JSON.") from None

    # ------------------------------------------------------------------ gateway discovery and identity

    async def get_gateway(self, request: web.Request) -> web.StreamResponse:
        return json_response({"url": self.gateway_url()})

    async def get_gateway_bot(self, request: web.Request) -> web.StreamResponse:
        bot = self._bot(request)
        used = self.state.identify_counts[bot.id]
        limits = {"total": 1000, "remaining": max(0, 1000 - used), "reset_after": 86_400_000, "max_concurrency": 1}
        return json_response({"url": self.gateway_url(), "shards": self.shards, "session_start_limit": limits})

    async def get_current_user(self, request: web.Request) -> web.StreamResponse:
        return json_response(current_user_object(self._bot(request)))

    async def get_application(self, request: web.Request) -> web.StreamResponse:
        return json_response(application_object(self.state, self._bot(request)))

    async def get_user(self, request: web.Request) -> web.StreamResponse:
        self._bot(request)
        user = self.state.users.get(request.match_info["user_id"])
        if user is None:
            raise unknown("User")
        return json_response(user_object(user))

    async def get_current_user_guilds(self, request: web.Request) -> web.StreamResponse:
        bot = self._bot(request)
        guilds = [self.state.guilds[g] for g in self.state.guilds_of_bot[bot.id]]
        return json_response([partial_guild_object(g) for g in guilds])

    async def get_guild(self, request: web.Request) -> web.StreamResponse:
        bot = self._bot(request)
        guild = self.state.guilds.get(request.match_info["guild_id"])
        if guild is None:
            raise unknown("Guild")
        if bot.id not in guild.bot_ids:
            raise missing_access()
        payload = guild_object(guild)
        if request.query.get("with_counts") in ("true", "True", "1"):
            payload.update(approximate_member_count=len(guild.members), approximate_presence_count=0)
        return json_response(payload)

    async def get_guild_channels(self, request: web.Request) -> web.StreamResponse:
        bot = self._bot(request)
        guild = self.state.guilds.get(request.match_info["guild_id"])
        if guild is None:
            raise unknown("Guild")
        if bot.id not in guild.bot_ids:
            raise missing_access()
        channels = [channel_object(self.state, self.state.channels[c]) for c in guild.channel_ids.values()]
        return json_response(channels)

    # ------------------------------------------------------------------ channels

    async def get_channel(self, request: web.Request) -> web.StreamResponse:
        bot = self._bot(request)
        return json_response(channel_object(self.state, self._channel(request, bot)))

    async def create_dm(self, request: web.Request) -> web.StreamResponse:
        bot = self._bot(request)
        body = await self._json(request)
        recipient = str(body.get("recipient_id") or "")
        if not recipient:
            raise form_error("recipient_id", "BASE_TYPE_REQUIRED", "This field is required")
        if recipient not in self.state.users or recipient == bot.id:
            raise unknown("User")
        return json_response(channel_object(self.state, self.state.open_dm(bot.id, recipient)))

    async def trigger_typing(self, request: web.Request) -> web.StreamResponse:
        bot = self._bot(request)
        channel = self._channel(request, bot)
        self.state.typing.append((bot.id, channel.id))
        return web.Response(status=204)

    async def get_messages(self, request: web.Request) -> web.StreamResponse:
        bot = self._bot(request)
        channel = self._channel(request, bot)
        query = request.query
        limit = _int_query(query.get("limit"), "limit", 50)
        if limit is None or not 1 <= limit <= 100:
            raise form_error("limit", "NUMBER_TYPE_MAX", "int value should be less than or equal to 100.")
        before, after, around = (_int_query(query.get(k), k, None) for k in ("before", "after", "around"))
        return json_response(self.state.history(channel, limit, before, after, around))

    async def get_message(self, request: web.Request) -> web.StreamResponse:
        bot = self._bot(request)
        channel = self._channel(request, bot)
        message = self.state.messages.get(request.match_info["message_id"])
        if message is None or message.channel_id != channel.id:
            raise unknown("Message")
        return json_response(message.data)

    async def get_attachment(self, request: web.Request) -> web.StreamResponse:
        """The bytes behind an attachment `url` (the simulator stands in for Discord's CDN; no auth)."""
        found = self.state.attachments.get(request.match_info["attachment_id"])
        if found is None:
            raise web.HTTPNotFound()
        data, content_type = found
        return web.Response(body=data, content_type=content_type.split(";")[0])

    # ------------------------------------------------------------------ message create

    async def create_message(self, request: web.Request) -> web.StreamResponse:
        """POST a message: auth → channel access → faults → rate limit → validation → store → dispatch."""
        bot = self._bot(request)
        channel = self._channel(request, bot)
        fault = self.state.take_fault(bot.id)
        if fault is not None:
            return _fault_response(fault, self.rate_limit)
        remaining, reset_after = self.state.spend(bot.id, channel.id, self.rate_limit, self.rate_limit_window)
        if remaining < 0:
            return _rate_limited(self.rate_limit, reset_after, is_global=False)
        headers = _rate_limit_headers(self.rate_limit, remaining, reset_after)
        payload, files = await self._message_body(request)
        nonce = payload.get("nonce")
        enforce_nonce = bool(payload.get("enforce_nonce")) and nonce is not None
        if enforce_nonce:
            previous = self.state.recent_nonce(bot.id, str(nonce))
            if previous is not None:
                return json_response(previous.data, headers=headers)
        message = self._build_message(bot, channel, payload, files)
        self.state.store(message)
        if enforce_nonce:
            self.state.remember_nonce(bot.id, str(nonce), message.data["id"])
        reference = message.data.get("message_reference")
        self.state.record_sent(
            SentMessage(
                id=message.data["id"],
                channel_id=channel.id,
                bot_id=bot.id,
                content=message.data["content"],
                message_reference=reference["message_id"] if reference else None,
                attachments=[
                    {"filename": a["filename"], "size": a["size"], "content_type": a["content_type"]}
                    for a in message.data["attachments"]
                ],
                embeds=list(message.data["embeds"]),
                created_at=time.time(),
                guild_id=channel.guild_id,
                message=message.data,
            )
        )
        self.gateway.dispatch_message(message)
        return json_response(message.data, headers=headers)

    async def _message_body(self, request: web.Request) -> tuple[dict[str, Any], list[tuple[int, str, bytes]]]:
        """JSON body, or multipart with `payload_json` and `files[n]` parts (index, filename, bytes)."""
        if not request.content_type.startswith("multipart/"):
            return await self._json(request), []
        payload: dict[str, Any] = {}
        files: list[tuple[int, str, bytes]] = []
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                continue
            raw = await part.read(decode=False)
            if part.name == "payload_json":
                try:
                    loaded = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    raise DiscordHTTPError(400, 50109, "The request body contains invalid JSON.") from None
                payload = loaded if isinstance(loaded, dict) else {}
            elif part.filename is not None:
                match = _FILE_FIELD.match(part.name or "")
                files.append((int(match.group(1)) if match else len(files), part.filename, bytes(raw)))
        return payload, files

    def _build_message(
        self, bot: Bot, channel: Channel, payload: dict[str, Any], files: list[tuple[int, str, bytes]]
    ) -> StoredMessage:
        content = payload.get("content")
        content = "" if content is None else str(content)
        if len(content) > MAX_CONTENT_LENGTH:
            raise form_error("content", "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_CONTENT_LENGTH} or fewer in length.")
        embeds = payload.get("embeds") or []
        if not isinstance(embeds, list) or not all(isinstance(e, dict) for e in embeds):
            raise form_error("embeds", "LIST_TYPE_CONVERT", "Only iterables may be used in a ListType")
        if len(embeds) > MAX_EMBEDS:
            raise form_error("embeds", "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_EMBEDS} or fewer in length.")
        if sum(_embed_size(e) for e in embeds) > MAX_EMBED_TOTAL:
            raise form_error("embeds", "MAX_EMBED_SIZE_EXCEEDED", "Embed size exceeds maximum size of 6000")
        if channel.type == CHANNEL_DM and self.state.users[channel.recipients[1]].bot:
            raise DiscordHTTPError(403, 50007, "Cannot send messages to this user")
        if not content and not embeds and not files and not payload.get("sticker_ids") and not payload.get("poll"):
            raise DiscordHTTPError(400, 50006, "Cannot send an empty message")
        reference = self._reference(channel, payload.get("message_reference"))
        descriptions = {
            str(a.get("id")): a for a in payload.get("attachments") or [] if isinstance(a, dict) and "id" in a
        }
        attachments = []
        for index, filename, data in sorted(files):
            described = descriptions.get(str(index), {})
            name = str(described.get("filename") or filename)
            attachment = attachment_object(self.state, self.http_url(), channel.id, name, data, None)
            if described.get("description"):
                attachment["description"] = described["description"]
            attachments.append(attachment)
        flags = payload.get("flags") if isinstance(payload.get("flags"), int) else 0
        return message_object(
            self.state,
            channel,
            self.state.users[bot.id],
            content,
            mentions=self._mentions(content, payload.get("allowed_mentions"), reference),
            reference=reference,
            attachments=attachments,
            embeds=embeds,
            nonce=payload.get("nonce"),
            tts=bool(payload.get("tts")),
            flags=flags or 0,
        )

    def _reference(self, channel: Channel, raw: Any) -> StoredMessage | None:
        """The replied-to message; an unknown one is a 400 unless `fail_if_not_exists` is false."""
        if not isinstance(raw, dict) or raw.get("message_id") is None:
            return None
        found = self.state.messages.get(str(raw["message_id"]))
        if found is not None and found.channel_id == channel.id:
            return found
        if raw.get("fail_if_not_exists") is False:
            return None
        raise form_error("message_reference", "MESSAGE_REFERENCE_UNKNOWN_MESSAGE", "Unknown message")

    def _mentions(self, content: str, allowed: Any, reference: StoredMessage | None) -> list[str]:
        """Users pinged by `<@id>` in the content as `allowed_mentions` permits, plus the replied-to author."""
        parse_users, allowed_users, replied_user = True, set(), True
        if isinstance(allowed, dict):
            parse_users = "users" in (allowed.get("parse") or [])
            allowed_users = {str(u) for u in allowed.get("users") or []}
            replied_user = bool(allowed.get("replied_user", False))
        found = [m for m in _USER_MENTION.findall(content) if parse_users or m in allowed_users]
        if reference is not None and replied_user:
            found.append(reference.author_id)
        return found


def _int_query(value: str | None, name: str, default: int | None) -> int | None:
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise form_error(name, "NUMBER_TYPE_COERCE", f'Value "{value}" is not int.') from None


def _embed_size(embed: dict[str, Any]) -> int:
    """The characters Discord counts toward the 6000 limit."""
    size = len(str(embed.get("title") or "")) + len(str(embed.get("description") or ""))
    for key, inner in (("footer", "text"), ("author", "name")):
        part = embed.get(key)
        if isinstance(part, dict):
            size += len(str(part.get(inner) or ""))
    for item in embed.get("fields") or []:
        if isinstance(item, dict):
            size += len(str(item.get("name") or "")) + len(str(item.get("value") or ""))
    return size


def _rate_limit_headers(limit: int, remaining: int, reset_after: float) -> dict[str, str]:
    return {
        "X-RateLimit-Limit": str(limit),
        "X-RateLimit-Remaining": str(max(0, remaining)),
        "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
        "X-RateLimit-Reset-After": f"{reset_after:.3f}",
        "X-RateLimit-Bucket": _MESSAGE_BUCKET,
    }


def _rate_limited(limit: int, retry_after: float, *, is_global: bool) -> web.Response:
    """A 429 as Discord (behind Google's load balancer, hence `Via`) sends it; discord.py retries only then."""
    headers = _rate_limit_headers(limit, 0, retry_after)
    headers.update(
        {
            "Via": "1.1 google",
            "Retry-After": str(math.ceil(retry_after)),
            "X-RateLimit-Scope": "global" if is_global else "user",
        }
    )
    if is_global:
        headers["X-RateLimit-Global"] = "true"
    body = {"message": "You are being rate limited.", "retry_after": retry_after, "global": is_global}
    return json_response(body, 429, headers)


def _fault_response(fault: Fault, limit: int) -> web.Response:
    if fault.retry_after is not None:
        return _rate_limited(limit, fault.retry_after, is_global=fault.is_global)
    error = generic_error(fault.status)
    return json_response(error.body(), fault.status)
