"""REST plumbing shared by the endpoint modules: error answers, JSON bodies and the real server's guards."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from simulators.evolution.state import EvolutionState, Instance
from simulators.evolution.wire import error_body


class EvolutionError(Exception):
    """An Evolution error answer: rendered as `{"status", "error", "response": {"message"}}` (§4.2)."""

    def __init__(self, status: int, message: Any) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status, content_type="application/json", headers=headers)


def required(body: dict[str, Any], *names: str) -> None:
    """Schema check: the exact message Evolution's JSON Schema validator gives for a missing property."""
    for name in names:
        if name not in body or body[name] is None:
            raise EvolutionError(400, [f'instance requires property "{name}"'])


async def read_body(request: web.Request) -> dict[str, Any]:
    """The JSON object of a request (`{}` when empty); anything else is Evolution's 400 "Invalid format"."""
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


def authorize(state: EvolutionState, request: web.Request) -> Instance:
    """Guard order of the real server: instance exists (404) → apikey (401)."""
    name = request.match_info["instance"]
    instance = state.instances.get(name)
    if instance is None:
        raise EvolutionError(404, [f'The "{name}" instance does not exist'])
    key = request.headers.get("apikey")
    if key != state.api_key and key != instance.token:
        raise EvolutionError(401, "Unauthorized")
    return instance


def require_global_key(state: EvolutionState, request: web.Request) -> None:
    if request.headers.get("apikey") != state.api_key:
        raise EvolutionError(401, "Unauthorized")


def evolution_errors(state: EvolutionState) -> Middleware:
    """Record every Evolution request and render `EvolutionError` and unknown routes as the real server does."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith("/__sim/"):
            state.requests.append((request.method, request.path))
        try:
            return await handler(request)
        except EvolutionError as exc:
            return json_response(error_body(exc.status, exc.message), exc.status)
        except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
            return json_response(error_body(404, [f"Cannot {request.method} {request.path}"]), 404)

    return middleware
