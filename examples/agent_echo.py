"""The echo agent: the reference implementation of Omni's public agent contract.

The hub calls every agent with `POST {agent_api_url}/api/agent/chat` (headers `Content-Type:
application/json`, `x-api-key`, W3C `traceparent`) and a JSON body carrying `user_id`, `session_id`,
`message`, `message_type`, `user`, `media` and `context` (see "The agent contract" in
/work/shared/docs/CONTRACT.md). The agent answers `{"text": ...}` (plus optional `media`/`actions`).
This agent answers `{"text": "Echo: <message>", "session_id": ..., "user_id": ...}`, which makes it the
smallest correct agent: copy it to start a real one, run it in demos, and use it in tests, where the
`EchoAgent` class also records each call and can fail, stall or answer anything on demand.

Signed calls: given the instance's `agent_signing_secret` (`--signing-secret whsec_...` or the
`AGENT_SIGNING_SECRET` environment variable), the agent checks the Standard Webhooks headers of every call
(`webhook-id`, `webhook-timestamp`, `webhook-signature`) over the raw body before it parses anything, and answers
401 `{"detail": "invalid signature: <why>"}` when they do not prove the call came from the hub within five minutes.
That check is the part of this file a real agent should copy (see "Agent calls are signed" in the README).

Run it with `python -m examples.agent_echo --host 127.0.0.1 --port 8000 [--api-key K] [--signing-secret S]`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import os
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from servicekit import standard_webhooks
from servicekit.runner import run, stop_signal

__all__ = ["EchoAgent", "main"]

Reply = Callable[[dict[str, Any]], dict[str, Any] | str]
"""A custom answer: a dict is sent as JSON, a str as the raw body (to test invalid JSON)."""


@dataclass(frozen=True)
class _Fault:
    """One injected failure of the agent (see `EchoAgent.fail_next`)."""

    status: int
    delay: float
    body: str | None


def _json(payload: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status, content_type="application/json")


MAX_REQUEST_BYTES = 32 * 1024 * 1024
"""Largest agent request accepted: a 16 MiB file as base64 (4/3 larger) plus the rest of the request."""


class EchoAgent:
    """An aiohttp server speaking the agent contract, with recording and fault injection for tests."""

    def __init__(self, *, api_key: str = "", prefix: str = "Echo: ", signing_secret: str = "") -> None:
        """Args:
        api_key: When set, every call must carry `x-api-key: <api_key>` (401 otherwise).
        prefix: Put in front of the echoed message.
        signing_secret: When set (`whsec_...`), every call must carry a valid Standard Webhooks signature made
            with it (401 otherwise).
        """
        self.api_key = api_key
        self.signing_secret = signing_secret
        self.rejections: list[str] = []
        """Why each call refused for its signature was refused, in order."""
        self.prefix = prefix
        self.url = ""
        self.calls: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self._faults: deque[_Fault] = deque()
        self._delay = 0.0
        self._reply: Reply | None = None
        self._runner: web.AppRunner | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Serve on `host:port` (0 picks a free port); `url` is set when this returns."""
        # Agent requests carry received files as base64 (up to AUTOMAGIK_OMNI_MAX_MEDIA_BYTES, 16 MiB by default);
        # aiohttp's default 1 MiB body limit would refuse a voice note of a few minutes.
        app = web.Application(client_max_size=MAX_REQUEST_BYTES)
        app.router.add_post("/api/agent/chat", self._chat)
        app.router.add_get("/health", self._health)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        self.url = f"http://{host}:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def fail_next(self, count: int, status: int = 500, delay: float = 0.0, body: str | None = None) -> None:
        """Make the next `count` authorized calls answer `status` (after sleeping `delay` seconds).

        `body` is sent as is with a JSON content type (so `status=200, body="not json"` is an invalid answer);
        a `{"detail": ...}` JSON body is used when it is None.
        """
        self._faults.extend([_Fault(status=status, delay=delay, body=body)] * count)

    def set_delay(self, seconds: float) -> None:
        """Sleep `seconds` before every answer, to exercise the hub's agent timeout."""
        self._delay = max(0.0, seconds)

    def set_reply(self, fn: Reply | None) -> None:
        """Answer with `fn(body)` instead of the echo; None restores the echo."""
        self._reply = fn

    async def _health(self, request: web.Request) -> web.StreamResponse:
        return _json({"status": "ok"})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        self.headers.append({name.lower(): value for name, value in request.headers.items()})
        if self.api_key and not hmac.compare_digest(request.headers.get("x-api-key", ""), self.api_key):
            return _json({"detail": "Invalid or missing API key"}, 401)
        raw = await request.read()
        if self.signing_secret:
            try:
                standard_webhooks.verify(self.signing_secret, request.headers, raw)
            except standard_webhooks.WebhookVerificationError as exc:
                self.rejections.append(str(exc))
                return _json({"detail": f"invalid signature: {exc}"}, 401)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return _json({"detail": "Invalid JSON body"}, 400)
        if not isinstance(body, dict):
            return _json({"detail": "The body must be a JSON object"}, 400)
        self.calls.append(body)
        if self._delay:
            await asyncio.sleep(self._delay)
        if self._faults:
            fault = self._faults.popleft()
            if fault.delay:
                await asyncio.sleep(fault.delay)
            if fault.body is None:
                return _json({"detail": "injected failure"}, fault.status)
            return web.Response(text=fault.body, status=fault.status, content_type="application/json")
        if self._reply is not None:
            answer = self._reply(body)
            if isinstance(answer, str):
                return web.Response(text=answer, content_type="application/json")
            return _json(answer)
        message = body.get("message")
        text = f"{self.prefix}{message if isinstance(message, str) else ''}"
        return _json({"text": text, "session_id": body.get("session_id"), "user_id": body.get("user_id")})


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m examples.agent_echo", description="The echo agent.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port (printed when ready)")
    parser.add_argument("--api-key", default="", help="require this x-api-key on every call")
    parser.add_argument("--prefix", default="Echo: ", help="put in front of the echoed message")
    parser.add_argument(
        "--signing-secret",
        default=os.environ.get("AGENT_SIGNING_SECRET", ""),
        help="verify Standard Webhooks signatures with this whsec_ secret (default: $AGENT_SIGNING_SECRET)",
    )
    return parser.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    agent = EchoAgent(api_key=args.api_key, prefix=args.prefix, signing_secret=args.signing_secret)
    await agent.start(args.host, args.port)
    stopping = stop_signal()
    print(f"echo agent listening on {agent.url}", flush=True)
    try:
        await stopping.wait()
    finally:
        await agent.stop()


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of `python -m examples.agent_echo`: serve until SIGINT/SIGTERM."""
    with contextlib.suppress(KeyboardInterrupt):
        run(_serve(_parse_args(argv)))


if __name__ == "__main__":
    main()
