"""Socket Mode: the websocket `apps.connections.open` hands out, carrying events as acknowledged envelopes.

On connect the app gets `hello`; each event arrives as an `events_api` envelope on one of the app's open
connections (round robin, as Slack picks one); the app acks with `{"envelope_id": …}`. An envelope not acked within
`ack_timeout` is sent again with `retry_attempt` + 1 and `retry_reason: "timeout"`, up to `max_retries` times.
`disconnect` sends Slack's `{"type": "disconnect"}` and closes the socket shortly after, so clients reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from simulators.slack.state import Bot, Delivery, SlackState
from simulators.slack.wire import socket_envelope

log = logging.getLogger(__name__)


@dataclass
class Connection:
    """One open Socket Mode websocket of an app."""

    id: int
    app_id: str
    ws: web.WebSocketResponse
    connected_at: float
    received: list[dict[str, Any]] = field(default_factory=list)


class SocketMode:
    """Tickets, connections, envelopes in flight and acks."""

    def __init__(self, state: SlackState, *, ack_timeout: float, max_retries: int, disconnect_grace: float) -> None:
        self.state = state
        self.ack_timeout = ack_timeout
        self.max_retries = max_retries
        self.disconnect_grace = disconnect_grace
        self.connections: dict[str, list[Connection]] = {}
        self.connect_counts: dict[str, int] = {}
        self.acks: list[dict[str, Any]] = []
        self._tickets: dict[str, str] = {}
        self._pending: dict[str, Delivery] = {}
        self._ids = itertools.count(1)
        self._turn = itertools.count()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._changed = asyncio.Event()

    async def changed(self) -> None:
        """Wait for the next connect or disconnect (for tests waiting on connection counts)."""
        self._changed.clear()
        await self._changed.wait()

    def issue_url(self, bot: Bot, ws_base: str) -> str:
        ticket = secrets.token_hex(16)
        self._tickets[ticket] = bot.app_id
        return f"{ws_base}/socket?ticket={ticket}&app_id={bot.app_id}"

    def open_connections(self, app_id: str) -> list[Connection]:
        return [c for c in self.connections.get(app_id, []) if not c.ws.closed]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        app_id = self._tickets.pop(request.query.get("ticket", ""), None)
        if app_id is None:
            return web.Response(status=401, text="invalid ticket")
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        connection = Connection(next(self._ids), app_id, ws, time.monotonic())
        self.connections.setdefault(app_id, []).append(connection)
        self.connect_counts[app_id] = self.connect_counts.get(app_id, 0) + 1
        await ws.send_json(
            {
                "type": "hello",
                "num_connections": len(self.open_connections(app_id)),
                "debug_info": {
                    "host": "applink-simulator",
                    "build_number": 1,
                    "approximate_connection_time": 18060,
                },
                "connection_info": {"app_id": app_id},
            }
        )
        self._changed.set()
        try:
            async for frame in ws:
                if frame.type == WSMsgType.TEXT:
                    self._on_text(connection, frame.data)
        finally:
            with contextlib.suppress(ValueError):
                self.connections[app_id].remove(connection)
            self._changed.set()
        return ws

    def _on_text(self, connection: Connection, data: str) -> None:
        try:
            message = json.loads(data)
        except json.JSONDecodeError:
            log.debug("socket mode: not JSON from connection %s: %r", connection.id, data[:200])
            return
        if not isinstance(message, dict):
            return
        connection.received.append(message)
        envelope_id = message.get("envelope_id")
        if not envelope_id:
            return
        self.acks.append(message)
        delivery = self._pending.pop(str(envelope_id), None)
        if delivery is not None:
            delivery.acked = True
            delivery.ack_payload = message.get("payload")
            delivery.done.set()

    async def deliver(self, bot: Bot, delivery: Delivery) -> None:
        """Send the envelope, resending it while unacked; `delivery.done` is set on ack or when retries run out."""
        assert delivery.envelope_id is not None
        self._pending[delivery.envelope_id] = delivery
        try:
            for attempt in range(self.max_retries + 1):
                reason = "timeout" if attempt else ""
                if not await self._send(
                    bot.app_id, socket_envelope(delivery.envelope, delivery.envelope_id, attempt, reason)
                ):
                    break
                delivery.sends += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(delivery.done.wait(), self.ack_timeout)
                if delivery.acked:
                    return
        finally:
            self._pending.pop(delivery.envelope_id, None)
            delivery.done.set()

    async def _send(self, app_id: str, frame: dict[str, Any]) -> bool:
        live = self.open_connections(app_id)
        if not live:
            return False
        connection = live[next(self._turn) % len(live)]
        try:
            await connection.ws.send_json(frame)
        except (ConnectionError, RuntimeError) as exc:
            log.debug("socket mode: send on connection %s failed: %s", connection.id, exc)
            return False
        return True

    async def disconnect(self, app_id: str, reason: str, close_after: float | None) -> int:
        """Send `disconnect` on every open connection of the app, then close them after the grace period."""
        live = self.open_connections(app_id)
        frame = {"type": "disconnect", "reason": reason, "debug_info": {"host": "applink-simulator"}}
        for connection in live:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await connection.ws.send_json(frame)
        grace = self.disconnect_grace if close_after is None else close_after
        task = asyncio.get_running_loop().create_task(self._close_later(live, grace))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return len(live)

    async def _close_later(self, connections: list[Connection], delay: float) -> None:
        await asyncio.sleep(delay)
        for connection in connections:
            await connection.ws.close(code=1000, message=b"disconnect")

    async def drop(self, app_id: str | None = None) -> int:
        """Close connections (one app's, or all) at once, without a `disconnect` frame first."""
        apps = [app_id] if app_id is not None else list(self.connections)
        closed = 0
        for app in apps:
            for connection in self.open_connections(app):
                await connection.ws.close(code=1001, message=b"going away")
                closed += 1
        return closed

    async def close_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.drop()
