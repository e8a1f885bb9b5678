"""`/__sim/*` JSON endpoints (no auth): the Python API's main powers for demos and benchmarks in other processes.

Errors answer `{"error": "..."}`: 404 for an unknown id, 400 for a malformed request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from aiohttp import web

from simulators.slack.wire import json_response

if TYPE_CHECKING:
    from simulators.slack.server import SlackSimulator

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ControlApi:
    """Thin JSON adapters over a `SlackSimulator`."""

    def __init__(self, sim: SlackSimulator) -> None:
        self.sim = sim

    def add_routes(self, app: web.Application) -> None:
        routes: list[tuple[str, str, Handler]] = [
            ("POST", "/__sim/teams", self.add_team),
            ("POST", "/__sim/bots", self.add_bot),
            ("POST", "/__sim/users", self.add_user),
            ("POST", "/__sim/channels", self.add_channel),
            ("POST", "/__sim/dms", self.open_dm),
            ("POST", "/__sim/messages", self.post_user_message),
            ("GET", "/__sim/posts", self.posts),
            ("POST", "/__sim/fail-next", self.fail_next),
            ("POST", "/__sim/socket-disconnect", self.socket_disconnect),
            ("POST", "/__sim/reset", self.reset),
            ("GET", "/__sim/state", self.state),
        ]
        for method, path, handler in routes:
            app.router.add_route(method, path, _guarded(handler))

    async def add_team(self, request: web.Request) -> web.StreamResponse:
        body = await _json(request)
        return json_response(asdict(self.sim.add_team(str(body.get("name") or "Acme"), body.get("id"))), 201)

    async def add_bot(self, request: web.Request) -> web.StreamResponse:
        body = await _json(request)
        bot = self.sim.add_bot(
            _required(body, "team_id"),
            str(body.get("name") or "omni-bot"),
            token=body.get("token"),
            signing_secret=body.get("signing_secret"),
            app_token=body.get("app_token"),
            request_url=body.get("request_url"),
        )
        data = asdict(bot)
        data["events"] = sorted(bot.events)
        return json_response(data, 201)

    async def add_user(self, request: web.Request) -> web.StreamResponse:
        body = await _json(request)
        user = self.sim.add_user(_required(body, "team_id"), _required(body, "name"), email=body.get("email"))
        return json_response(asdict(user), 201)

    async def add_channel(self, request: web.Request) -> web.StreamResponse:
        body = await _json(request)
        members = body.get("members")
        channel = self.sim.add_channel(
            _required(body, "team_id"),
            str(body.get("name") or "general"),
            private=bool(body.get("private", False)),
            members=[str(m) for m in members] if isinstance(members, list) else None,
            is_general=bool(body.get("is_general", False)),
        )
        return json_response({"id": channel.id, "name": channel.name, "members": sorted(channel.members)}, 201)

    async def open_dm(self, request: web.Request) -> web.StreamResponse:
        body = await _json(request)
        bot = self.sim.state.bots[_required(body, "bot_token")]
        return json_response({"id": self.sim.open_dm(bot, _required(body, "user_id")).id}, 201)

    async def post_user_message(self, request: web.Request) -> web.StreamResponse:
        body = await _json(request)
        message, deliveries = await self.sim.post_user_message(
            _required(body, "channel_id"),
            _required(body, "user_id"),
            str(body.get("text") or ""),
            thread_ts=body.get("thread_ts"),
            wait=bool(body.get("wait", True)),
        )
        shown = [
            {"event_id": d.event_id, "event_type": d.event_type, "transport": d.transport, "status": d.status}
            for d in deliveries
        ]
        return json_response({"message": message, "deliveries": shown}, 201)

    async def posts(self, request: web.Request) -> web.StreamResponse:
        return json_response(
            [
                {"method": p.method, "channel": p.channel, "ts": p.ts, "text": p.text, "thread_ts": p.thread_ts}
                for p in self.sim.posts
            ]
        )

    async def fail_next(self, request: web.Request) -> web.StreamResponse:
        body = await _json(request)
        self.sim.fail_next(
            _required(body, "method"),
            status=body.get("status"),
            retry_after=body.get("retry_after", 1),
            error=body.get("error"),
            count=int(body.get("count", 1)),
        )
        return json_response({"ok": True})

    async def socket_disconnect(self, request: web.Request) -> web.StreamResponse:
        body = await _json(request)
        bot = self.sim.state.bots[_required(body, "bot_token")]
        count = await self.sim.socket_disconnect(bot, str(body.get("reason") or "refresh_requested"))
        return json_response({"disconnected": count})

    async def reset(self, request: web.Request) -> web.StreamResponse:
        self.sim.reset()
        return json_response({"ok": True})

    async def state(self, request: web.Request) -> web.StreamResponse:
        state = self.sim.state
        return json_response(
            {
                "teams": [asdict(t) for t in state.teams.values()],
                "bots": [
                    {"name": b.name, "team_id": b.team_id, "user_id": b.user_id, "app_id": b.app_id}
                    for b in state.bots.values()
                ],
                "users": [asdict(u) for u in state.users.values()],
                "channels": [
                    {"id": c.id, "team_id": c.team_id, "name": c.name, "kind": c.kind, "members": sorted(c.members)}
                    for c in state.channels.values()
                ],
                "posts": len(state.posts),
                "deliveries": len(state.deliveries),
            }
        )


class _BadRequest(Exception):
    pass


async def _json(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json() if request.can_read_body else {}
    except ValueError as exc:
        raise _BadRequest("body is not JSON") from exc
    if not isinstance(body, dict):
        raise _BadRequest("body must be a JSON object")
    return body


def _required(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not value:
        raise _BadRequest(f"{name} is required")
    return str(value)


def _guarded(handler: Handler) -> Handler:
    async def run(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except _BadRequest as exc:
            return json_response({"error": str(exc)}, 400)
        except KeyError as exc:
            return json_response({"error": f"unknown {exc.args[0] if exc.args else 'id'}"}, 404)
        except ValueError as exc:
            return json_response({"error": str(exc)}, 400)

    return run
