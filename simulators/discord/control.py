"""`/__sim/*` JSON endpoints (no auth): the Python API's powers for tests, demos and benchmarks in other processes.

Errors answer `{"error": "..."}`: 404 for an unknown id, 400 for a malformed request.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from aiohttp import web

from simulators.discord.wire import json_object, json_response

if TYPE_CHECKING:
    from simulators.discord.server import DiscordSimulator

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ControlApi:
    """Thin JSON adapters over a `DiscordSimulator`."""

    def __init__(self, sim: DiscordSimulator) -> None:
        self.sim = sim

    def add_routes(self, app: web.Application) -> None:
        """Register the `/__sim/*` routes."""
        routes: list[tuple[str, str, Handler]] = [
            ("POST", "/__sim/bots", self.add_bot),
            ("POST", "/__sim/users", self.add_user),
            ("POST", "/__sim/guilds", self.add_guild),
            ("POST", "/__sim/threads", self.add_thread),
            ("POST", "/__sim/messages", self.post_message),
            ("POST", "/__sim/dms", self.send_dm),
            ("POST", "/__sim/redeliver", self.redeliver),
            ("GET", "/__sim/sent", self.sent),
            ("POST", "/__sim/wait-sent", self.wait_sent),
            ("GET", "/__sim/typing", self.typing),
            ("POST", "/__sim/rate-limit-next", self.rate_limit_next),
            ("POST", "/__sim/fail-next", self.fail_next),
            ("POST", "/__sim/drop-connections", self.drop_connections),
            ("POST", "/__sim/request-reconnect", self.request_reconnect),
            ("POST", "/__sim/revoke-token", self.revoke_token),
            ("POST", "/__sim/reset", self.reset),
            ("GET", "/__sim/state", self.state),
        ]
        for method, path, handler in routes:
            app.router.add_route(method, path, _guarded(handler))

    # ------------------------------------------------------------------ staging

    async def add_bot(self, request: web.Request) -> web.StreamResponse:
        body = await json_object(request)
        bot = self.sim.add_bot(
            str(body.get("name") or "omni-bot"), body.get("token"), bool(body.get("privileged_intents", True))
        )
        return json_response(asdict(bot), 201)

    async def add_user(self, request: web.Request) -> web.StreamResponse:
        body = await json_object(request)
        user = self.sim.add_user(_required(body, "name"), bool(body.get("bot", False)))
        return json_response(asdict(user), 201)

    async def add_guild(self, request: web.Request) -> web.StreamResponse:
        body = await json_object(request)
        guild = self.sim.add_guild(
            _required(body, "name"),
            bots=[str(b) for b in body.get("bots") or []],
            channels=[str(c) for c in body.get("channels") or ["general"]],
            owner_id=body.get("owner_id"),
        )
        return json_response({"id": guild.id, "name": guild.name, "channel_ids": guild.channel_ids}, 201)

    async def add_thread(self, request: web.Request) -> web.StreamResponse:
        body = await json_object(request)
        thread_id = self.sim.add_thread(
            _required(body, "guild_id"),
            _required(body, "parent_channel_id"),
            str(body.get("name") or "thread"),
            body.get("owner_id"),
        )
        return json_response({"id": thread_id}, 201)

    # ------------------------------------------------------------------ traffic

    async def post_message(self, request: web.Request) -> web.StreamResponse:
        body = await json_object(request)
        message = await self.sim.post_message(
            _required(body, "channel_id"),
            _required(body, "author_id"),
            str(body.get("content") or ""),
            mentions=[str(m) for m in body.get("mentions") or []],
            reply_to=str(body["reply_to"]) if body.get("reply_to") else None,
            attachments=_attachments(body),
            message_id=str(body["message_id"]) if body.get("message_id") else None,
            embeds=list(body.get("embeds") or []),
            ping_reply_author=bool(body.get("ping_reply_author", True)),
        )
        return json_response(message, 201)

    async def send_dm(self, request: web.Request) -> web.StreamResponse:
        body = await json_object(request)
        message = await self.sim.send_dm(
            _required(body, "bot_id"),
            _required(body, "user_id"),
            str(body.get("content") or ""),
            attachments=_attachments(body),
            message_id=str(body["message_id"]) if body.get("message_id") else None,
        )
        return json_response(message, 201)

    async def redeliver(self, request: web.Request) -> web.StreamResponse:
        body = await json_object(request)
        reached = await self.sim.redeliver(_required(body, "message_id"))
        return json_response({"sessions": reached})

    async def sent(self, request: web.Request) -> web.StreamResponse:
        """Every recorded bot message; `?since=N` skips the first N."""
        since = int(request.query.get("since", "0"))
        return json_response([asdict(s) for s in self.sim.sent[since:]])

    async def wait_sent(self, request: web.Request) -> web.StreamResponse:
        """Long-poll until `count` messages were sent (408 after `timeout` seconds)."""
        body = await json_object(request)
        try:
            sent = await self.sim.wait_for_sent(int(body.get("count", 1)), float(body.get("timeout", 5.0)))
        except TimeoutError:
            return json_response({"error": "timed out", "sent": len(self.sim.sent)}, 408)
        return json_response([asdict(s) for s in sent])

    async def typing(self, request: web.Request) -> web.StreamResponse:
        return json_response([{"bot_id": b, "channel_id": c} for b, c in self.sim.typing])

    # ------------------------------------------------------------------ faults

    async def rate_limit_next(self, request: web.Request) -> web.StreamResponse:
        body = await json_object(request)
        self.sim.rate_limit_next(
            int(body.get("count", 1)),
            retry_after=float(body.get("retry_after", 0.2)),
            is_global=bool(body.get("global", False)),
            bot_id=body.get("bot_id"),
        )
        return json_response({"pending_faults": len(self.sim.state.faults)})

    async def fail_next(self, request: web.Request) -> web.StreamResponse:
        body = await json_object(request)
        self.sim.fail_next(int(body.get("count", 1)), status=int(body.get("status", 500)), bot_id=body.get("bot_id"))
        return json_response({"pending_faults": len(self.sim.state.faults)})

    async def drop_connections(self, request: web.Request) -> web.StreamResponse:
        body = await json_object(request)
        code = body.get("code")
        dropped = await self.sim.drop_connections(body.get("bot_id"), int(code) if code is not None else None)
        return json_response({"dropped": dropped})

    async def request_reconnect(self, request: web.Request) -> web.StreamResponse:
        body = await json_object(request)
        return json_response({"sessions": self.sim.request_reconnect(body.get("bot_id"))})

    async def revoke_token(self, request: web.Request) -> web.StreamResponse:
        body = await json_object(request)
        self.sim.revoke_token(_required(body, "token"))
        return json_response({"revoked": True})

    async def reset(self, request: web.Request) -> web.StreamResponse:
        self.sim.reset()
        return json_response({"reset": True})

    async def state(self, request: web.Request) -> web.StreamResponse:
        """Bots with their connection state and counters, guilds, and what was recorded."""
        sim = self.sim
        bots = [
            {
                "id": bot.id,
                "name": bot.name,
                "connected": bool(sim.sessions(bot.id)),
                "sessions": [asdict(s) for s in sim.sessions(bot.id)],
                "identify_count": sim.identify_count(bot.id),
                "resume_count": sim.resume_count(bot.id),
            }
            for bot in sim.state.bots.values()
        ]
        guilds = [
            {"id": g.id, "name": g.name, "channel_ids": g.channel_ids, "bot_ids": g.bot_ids}
            for g in sim.state.guilds.values()
        ]
        return json_response(
            {
                "api_url": sim.api_url,
                "gateway_url": sim.gateway_url,
                "connected_bot_ids": sim.connected_bot_ids(),
                "bots": bots,
                "guilds": guilds,
                "sent": len(sim.sent),
                "typing": len(sim.typing),
                "pending_faults": len(sim.state.faults),
            }
        )


def _guarded(handler: Handler) -> Handler:
    """Map the Python API's KeyError (unknown id) to 404 and ValueError/TypeError to 400."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except KeyError as exc:
            return json_response({"error": str(exc.args[0]) if exc.args else "not found"}, 404)
        except (ValueError, TypeError) as exc:
            return json_response({"error": str(exc)}, 400)

    return guarded


def _required(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if value is None or value == "":
        raise ValueError(f"{name} is required")
    return str(value)


def _attachments(body: dict[str, Any]) -> list[dict[str, Any]]:
    """`{filename, content_type?, content? (text) | content_base64?}` → the Python API's `{filename, data}`."""
    out = []
    for spec in body.get("attachments") or []:
        if not isinstance(spec, dict) or not spec.get("filename"):
            raise ValueError("each attachment needs a filename")
        if spec.get("content_base64") is not None:
            try:
                data = base64.b64decode(str(spec["content_base64"]), validate=True)
            except (binascii.Error, ValueError):
                raise ValueError("content_base64 is not base64") from None
        else:
            data = str(spec.get("content") or "").encode()
        out.append({"filename": str(spec["filename"]), "data": data, "content_type": spec.get("content_type")})
    return out
