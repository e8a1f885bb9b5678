"""The Web API (`/api/<method>`): what slack_sdk's `AsyncWebClient` calls, answered as Slack does.

Parameters are read from the query string, a form (urlencoded or multipart) and a JSON body alike, since
slack_sdk sends `chat.postMessage` as JSON but `conversations.replies` as query parameters. The token comes from
`Authorization: Bearer …` or a `token` parameter. Failures are `{"ok": false, "error": …}` with HTTP 200, except
armed faults, which may carry a status (429 with `Retry-After`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from simulators.slack.objects import bot_message, channel_object, file_object, user_object
from simulators.slack.state import Bot, Channel, Post, SlackState
from simulators.slack.wire import MAX_TEXT, SlackError, decode_cursor, encode_cursor, json_response

Method = Callable[[Bot, dict[str, Any]], Awaitable[dict[str, Any]]]
BotPostHook = Callable[[Bot, Channel, dict[str, Any]], None]


class WebApi:
    """The Web API methods over a `SlackState`."""

    def __init__(
        self,
        state: SlackState,
        *,
        base_url: Callable[[], str],
        issue_socket_url: Callable[[Bot], str],
        on_bot_post: BotPostHook,
    ) -> None:
        self.state = state
        self.latency = 0.0
        self.method_latency: dict[str, float] = {}
        self._base_url = base_url
        self._issue_socket_url = issue_socket_url
        self._on_bot_post = on_bot_post
        self._methods: dict[str, Method] = {
            "auth.test": self.auth_test,
            "chat.postMessage": self.chat_post_message,
            "chat.update": self.chat_update,
            "chat.delete": self.chat_delete,
            "conversations.open": self.conversations_open,
            "conversations.replies": self.conversations_replies,
            "conversations.history": self.conversations_history,
            "conversations.list": self.conversations_list,
            "conversations.info": self.conversations_info,
            "users.info": self.users_info,
            "users.list": self.users_list,
            "files.getUploadURLExternal": self.files_get_upload_url,
            "files.completeUploadExternal": self.files_complete_upload,
        }

    def add_routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/api/{method}", self.handle)
        app.router.add_post("/upload/v1/{file_id}", self.upload)
        app.router.add_get("/files-pri/{key}/{name}", self.download)
        app.router.add_get("/files-pri/{key}/download/{name}", self.download)

    # ------------------------------------------------------------------ dispatch

    async def handle(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        try:
            params = await _params(request)
            token = _bearer(request) or str(params.pop("token", "") or "")
            self.state.calls.append((method, dict(params)))
            delay = self.method_latency.get(method, self.latency)
            if delay > 0:
                await asyncio.sleep(delay)
            fault = self.state.take_fault(method)
            if fault is not None:
                headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
                raise SlackError(fault.error, fault.status, headers)
            if method == "apps.connections.open":
                return json_response(self.apps_connections_open(token))
            handler = self._methods.get(method)
            if handler is None:
                raise SlackError("unknown_method")
            bot = self._authenticate(token)
            result = await handler(bot, params)
            return json_response({"ok": True, **result})
        except SlackError as exc:
            return exc.response()

    def _authenticate(self, token: str) -> Bot:
        if not token:
            raise SlackError("not_authed")
        if token.startswith("xapp-"):
            if self.state.bot_by_app_token(token) is not None:
                raise SlackError("not_allowed_token_type")
            raise SlackError("invalid_auth")
        bot = self.state.bots.get(token)
        if bot is None:
            raise SlackError("invalid_auth")
        return bot

    def _channel(self, bot: Bot, channel_id: Any, *, post: bool = False) -> Channel:
        """A conversation the bot can see: its team's public channels, and private ones it is a member of.

        With `post=True` a user id (`U…`) resolves to the DM with that user, as `chat.postMessage` allows.
        """
        if not channel_id:
            raise SlackError("channel_not_found")
        channel_id = str(channel_id)
        if post and channel_id in self.state.users and channel_id.startswith(("U", "W")):
            if self.state.users[channel_id].team_id != bot.team_id:
                raise SlackError("channel_not_found")
            channel, _ = self.state.open_conversation(bot.team_id, [bot.user_id, channel_id])
            return channel
        found = self.state.channels.get(channel_id)
        if found is None or found.team_id != bot.team_id:
            raise SlackError("channel_not_found")
        channel = found
        if channel.kind != "channel" and bot.user_id not in channel.members:
            raise SlackError("channel_not_found")
        return channel

    # ------------------------------------------------------------------ methods

    async def auth_test(self, bot: Bot, params: dict[str, Any]) -> dict[str, Any]:
        team = self.state.team(bot.team_id)
        return {
            "url": f"{self._base_url()}/",
            "team": team.name,
            "user": bot.name,
            "team_id": team.id,
            "user_id": bot.user_id,
            "bot_id": bot.bot_id,
            "is_enterprise_install": False,
        }

    def apps_connections_open(self, token: str) -> dict[str, Any]:
        if not token:
            raise SlackError("not_authed")
        bot = self.state.bot_by_app_token(token)
        if bot is None:
            raise SlackError("not_allowed_token_type" if token in self.state.bots else "invalid_auth")
        return {"ok": True, "url": self._issue_socket_url(bot)}

    async def chat_post_message(self, bot: Bot, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(bot, params.get("channel"), post=True)
        if channel.kind == "channel" and bot.user_id not in channel.members:
            raise SlackError("not_in_channel")
        text = str(params.get("text") or "")
        if not text and not params.get("blocks") and not params.get("attachments"):
            raise SlackError("no_text")
        if len(text) > MAX_TEXT:
            raise SlackError("msg_too_long")
        thread_ts = str(params["thread_ts"]) if params.get("thread_ts") else None
        parent = channel.by_ts.get(thread_ts) if thread_ts else None
        message = bot_message(self.state, channel, bot, text, thread_ts if parent is not None else None)
        if params.get("blocks"):
            blocks = params["blocks"]
            message["blocks"] = json.loads(blocks) if isinstance(blocks, str) else blocks
        if thread_ts and parent is not None and _truthy(params.get("reply_broadcast")):
            message["subtype"] = "thread_broadcast"
        self.state.store(channel, message)
        self.state.record_post(
            Post(
                "chat.postMessage",
                bot.team_id,
                bot.user_id,
                channel.id,
                message["ts"],
                text,
                thread_ts,
                message,
                params,
            )
        )
        self._on_bot_post(bot, channel, message)
        return {"channel": channel.id, "ts": message["ts"], "message": message}

    async def chat_update(self, bot: Bot, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(bot, params.get("channel"))
        message = channel.by_ts.get(str(params.get("ts") or ""))
        if message is None:
            raise SlackError("message_not_found")
        if message.get("user") != bot.user_id:
            raise SlackError("cant_update_message")
        text = str(params.get("text") or "")
        if len(text) > MAX_TEXT:
            raise SlackError("msg_too_long")
        message["text"] = text
        message["edited"] = {"user": bot.user_id, "ts": self.state.clock.next()}
        return {"channel": channel.id, "ts": message["ts"], "text": text, "message": message}

    async def chat_delete(self, bot: Bot, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(bot, params.get("channel"))
        ts = str(params.get("ts") or "")
        message = channel.by_ts.get(ts)
        if message is None:
            raise SlackError("message_not_found")
        if message.get("user") != bot.user_id:
            raise SlackError("cant_delete_message")
        channel.messages.remove(message)
        del channel.by_ts[ts]
        return {"channel": channel.id, "ts": ts}

    async def conversations_open(self, bot: Bot, params: dict[str, Any]) -> dict[str, Any]:
        if params.get("channel"):
            channel = self._channel(bot, params["channel"])
            return {"no_op": True, "already_open": True, "channel": {"id": channel.id}}
        users = [u.strip() for u in str(params.get("users") or "").split(",") if u.strip()]
        if not users:
            raise SlackError("users_list_not_supplied")
        for user_id in users:
            user = self.state.users.get(user_id)
            if user is None or user.team_id != bot.team_id:
                raise SlackError("user_not_found")
        channel, existed = self.state.open_conversation(bot.team_id, [bot.user_id, *users])
        shown: dict[str, Any] = {"id": channel.id}
        if _truthy(params.get("return_im")):
            shown = channel_object(channel, bot.user_id)
        return {"no_op": existed, "already_open": existed, "channel": shown}

    async def conversations_replies(self, bot: Bot, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(bot, params.get("channel"))
        ts = str(params.get("ts") or "")
        parent = channel.by_ts.get(ts)
        if parent is None:
            raise SlackError("thread_not_found")
        thread_ts = str(parent.get("thread_ts") or parent["ts"])
        root = channel.by_ts.get(thread_ts, parent)
        messages = [root, *channel.replies(thread_ts)]
        messages = _between(messages, params)
        return _page(messages, params, key="messages", default_limit=1000)

    async def conversations_history(self, bot: Bot, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(bot, params.get("channel"))
        top = [
            m
            for m in channel.messages
            if not m.get("thread_ts") or m["thread_ts"] == m["ts"] or m.get("subtype") == "thread_broadcast"
        ]
        messages = list(reversed(_between(top, params)))
        page = _page(messages, params, key="messages", default_limit=100)
        page["pin_count"] = 0
        return page

    async def conversations_list(self, bot: Bot, params: dict[str, Any]) -> dict[str, Any]:
        kinds = {
            "public_channel": "channel",
            "private_channel": "group",
            "im": "im",
            "mpim": "mpim",
        }
        wanted = {
            kinds[t.strip()] for t in str(params.get("types") or "public_channel").split(",") if t.strip() in kinds
        }
        visible = [
            c
            for c in self.state.channels.values()
            if c.team_id == bot.team_id and c.kind in wanted and (c.kind == "channel" or bot.user_id in c.members)
        ]
        channels = [channel_object(c, bot.user_id) for c in visible]
        return _page(channels, params, key="channels", default_limit=100, has_more=False)

    async def conversations_info(self, bot: Bot, params: dict[str, Any]) -> dict[str, Any]:
        return {"channel": channel_object(self._channel(bot, params.get("channel")), bot.user_id)}

    async def users_info(self, bot: Bot, params: dict[str, Any]) -> dict[str, Any]:
        user = self.state.users.get(str(params.get("user") or ""))
        if user is None or user.team_id != bot.team_id:
            raise SlackError("user_not_found")
        return {"user": user_object(user)}

    async def users_list(self, bot: Bot, params: dict[str, Any]) -> dict[str, Any]:
        members = [user_object(u) for u in self.state.users.values() if u.team_id == bot.team_id]
        page = _page(members, params, key="members", default_limit=0, has_more=False)
        page["cache_ts"] = int(asyncio.get_running_loop().time())
        return page

    async def files_get_upload_url(self, bot: Bot, params: dict[str, Any]) -> dict[str, Any]:
        filename = str(params.get("filename") or "")
        if not filename:
            raise SlackError("invalid_arguments")
        try:
            length = int(params.get("length") or 0)
        except (TypeError, ValueError) as exc:
            raise SlackError("invalid_arguments") from exc
        if length <= 0:
            raise SlackError("invalid_arguments")
        stored = self.state.new_file(bot.team_id, filename, None, bot.user_id)
        return {"upload_url": f"{self._base_url()}/upload/v1/{stored.id}", "file_id": stored.id}

    async def files_complete_upload(self, bot: Bot, params: dict[str, Any]) -> dict[str, Any]:
        raw = params.get("files")
        try:
            specs = json.loads(raw) if isinstance(raw, str) else raw
        except json.JSONDecodeError as exc:
            raise SlackError("invalid_json") from exc
        if not isinstance(specs, list) or not specs:
            raise SlackError("invalid_arguments")
        stored_files = []
        for spec in specs:
            stored = self.state.files.get(str(spec.get("id") if isinstance(spec, dict) else ""))
            if stored is None or stored.team_id != bot.team_id or not stored.uploaded:
                raise SlackError("file_not_found")
            if spec.get("title"):
                stored.title = str(spec["title"])
            stored_files.append(stored)
        channel_id = params.get("channel_id") or (str(params.get("channels") or "").split(",")[0] or None)
        base = self._base_url()
        if not channel_id:
            return {"files": [file_object(s, base) for s in stored_files]}
        channel = self._channel(bot, channel_id)
        thread_ts = str(params["thread_ts"]) if params.get("thread_ts") else None
        comment = str(params.get("initial_comment") or "")
        message = bot_message(self.state, channel, bot, comment, thread_ts if thread_ts in channel.by_ts else None)
        files = [file_object(s, base, channel.id, message["ts"]) for s in stored_files]
        message.update({"files": files, "upload": True, "display_as_bot": False})
        self.state.store(channel, message)
        self.state.record_post(
            Post(
                "files.completeUploadExternal",
                bot.team_id,
                bot.user_id,
                channel.id,
                message["ts"],
                comment,
                thread_ts,
                message,
                params,
                files,
            )
        )
        self._on_bot_post(bot, channel, message)
        return {"files": files}

    # ------------------------------------------------------------------ file bytes

    async def upload(self, request: web.Request) -> web.StreamResponse:
        """The upload URL `files.getUploadURLExternal` hands out; answers `OK - <bytes>` in text/plain as Slack."""
        stored = self.state.files.get(request.match_info["file_id"])
        if stored is None:
            return web.Response(status=404, text="file not found", content_type="text/plain")
        if request.content_type.startswith("multipart/"):
            reader = await request.multipart()
            part = await reader.next()
            data = await part.read() if isinstance(part, web.BodyPartReader) else b""  # type: ignore[attr-defined]
        else:
            data = await request.read()
        stored.data = bytes(data)
        stored.uploaded = True
        return web.Response(text=f"OK - {len(stored.data)}", content_type="text/plain")

    async def download(self, request: web.Request) -> web.StreamResponse:
        """`url_private`: the bytes, for a bearer of a bot token of the file's team (a 404 otherwise)."""
        team_id, _, file_id = request.match_info["key"].partition("-")
        stored = self.state.files.get(file_id)
        bot = self.state.bots.get(_bearer(request) or "")
        if stored is None or stored.team_id != team_id or bot is None or bot.team_id != team_id:
            return web.Response(status=404, text="not found", content_type="text/plain")
        return web.Response(body=stored.data, content_type=stored.mimetype)


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return None


async def _params(request: web.Request) -> dict[str, Any]:
    params: dict[str, Any] = dict(request.query)
    if request.method != "POST" or not request.can_read_body:
        return params
    if request.content_type == "application/json":
        try:
            body = await request.json()
        except json.JSONDecodeError as exc:
            raise SlackError("invalid_json") from exc
        if isinstance(body, dict):
            params.update(body)
    elif request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = await request.post()
        params.update({k: v for k, v in form.items() if isinstance(v, str)})
    return params


def _truthy(value: Any) -> bool:
    return value is True or str(value).lower() in ("1", "true")


def _between(messages: list[dict[str, Any]], params: dict[str, Any]) -> list[dict[str, Any]]:
    """Messages within `oldest`..`latest` (exclusive unless `inclusive`), as history and replies filter."""
    inclusive = _truthy(params.get("inclusive"))
    oldest = float(params.get("oldest") or 0)
    latest = float(params["latest"]) if params.get("latest") else None
    kept = []
    for message in messages:
        ts = float(message["ts"])
        if ts < oldest or (ts == oldest and oldest and not inclusive):
            continue
        if latest is not None and (ts > latest or (ts == latest and not inclusive)):
            continue
        kept.append(message)
    return kept


def _page(
    items: list[dict[str, Any]], params: dict[str, Any], *, key: str, default_limit: int, has_more: bool = True
) -> dict[str, Any]:
    """One cursor page; `limit` 0 (or absent with `default_limit` 0) means everything."""
    try:
        offset = decode_cursor(str(params.get("cursor") or ""))
        limit = int(params.get("limit") or default_limit)
    except ValueError as exc:
        raise SlackError("invalid_cursor") from exc
    end = len(items) if limit <= 0 else offset + limit
    page = items[offset:end]
    next_cursor = encode_cursor(end) if end < len(items) else ""
    result: dict[str, Any] = {key: page, "response_metadata": {"next_cursor": next_cursor}}
    if has_more:
        result["has_more"] = bool(next_cursor)
    return result
