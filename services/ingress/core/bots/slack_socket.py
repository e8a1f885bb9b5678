"""One Slack instance's Socket Mode connection: Events API envelopes over a websocket, into the shared accept path.

An instance with an app-level token (`xapp-…`) needs no public URL: `apps.connections.open` hands out a websocket
URL, Slack pushes each event as an `events_api` envelope, and the event counts as delivered once we send its
`{"envelope_id"}` back. The host runs one connection per instance across replicas (a lease, like the Discord bots):
Slack gives each event to one random open connection of the app, so two replicas would only split the traffic.

Why our own small aiohttp client rather than slack_sdk's `SocketModeClient`: the hub needs three things the SDK
hides — the ack is sent only after the accept path has stored the event (an event the inbox could not take is
not acknowledged, so Slack delivers it again), a refused token ends the connection in `error` with Slack's reason
instead of a reconnect loop, and the connection state is reported to the host for `/health`.

No signature here: the websocket itself is authenticated by the app token. Payloads go through the webhook
receiver's parser (`receivers.slack.parse_envelope`), so both paths answer exactly the same messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiohttp
import orjson
from opentelemetry import context as otel_context
from opentelemetry import trace

from servicekit import errors
from servicekit import trace_attributes as attrs
from servicekit.channels import Channel
from servicekit.instances import Instance, SlackConfig
from services.ingress.core.bots.discord_bot import Cursors
from services.ingress.core.bots.status import CONNECTED, CONNECTING, DISCONNECTED, ERROR, BotStatus
from services.ingress.core.receivers.base import Received
from services.ingress.core.receivers.slack import parse_envelope, trace_payload

log = logging.getLogger(__name__)
_tracer = trace.get_tracer(__name__)

Deliver = Callable[[Instance, Received, dict[str, Any]], Awaitable[object]]
"""Stores one received event (the accept path); raises when it could not be stored."""

PERMANENT_ERRORS = {
    "invalid_auth": "Slack refused the app token (invalid_auth)",
    "not_authed": "Slack refused the app token (not_authed)",
    "account_inactive": "the Slack app's token belongs to a deleted user or workspace (account_inactive)",
    "token_revoked": "the Slack app token was revoked (token_revoked)",
    "token_expired": "the Slack app token expired (token_expired)",
    "not_allowed_token_type": "slack_app_token must be an app-level token (xapp-…) with connections:write",
    "missing_scope": "the Slack app token lacks the connections:write scope",
    "link_disabled": "Socket Mode is turned off for this Slack app",
}
"""apps.connections.open errors (and `disconnect` reasons) after which reconnecting cannot help."""

RECONNECT_BACKOFF_SECONDS = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
"""Pauses before reconnecting after a dropped connection or a failed open, growing while it keeps failing."""

DELIVERY_BACKOFF_SECONDS = (0.1, 0.3, 0.6, 1.0)
"""Pauses between tries to store one event (about 2 s in all, inside Slack's 3 s ack window); after that the event
is left unacknowledged and Slack delivers it again."""

HEARTBEAT_SECONDS = 30.0
"""Our websocket pings: a connection that silently died is noticed within about a minute."""

OPEN_TIMEOUT_SECONDS = 10.0


class _Refused(Exception):
    """Slack refused the connection for good (see PERMANENT_ERRORS)."""


class SlackSocketBot:
    """Keeps one Socket Mode connection of one instance open until stopped or refused."""

    channel = Channel.SLACK

    def __init__(
        self,
        instance: Instance,
        deliver: Deliver,
        *,
        api_url: str,
        cursors: Cursors | None = None,
        on_state_change: Callable[[], None] = lambda: None,
        reconnect_backoff: Sequence[float] = RECONNECT_BACKOFF_SECONDS,
        delivery_backoff: Sequence[float] = DELIVERY_BACKOFF_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.instance = instance
        self.cursors: Cursors = dict(cursors or {})
        """Unused: Slack redelivers unacknowledged events itself, so there is no history to catch up on."""
        self.cursors_dirty = False
        self.permanent_failure = False
        self.ended_at: float | None = None
        self.connections = 0
        """How many websockets this bot has opened (a reconnect adds one)."""
        self._deliver = deliver
        self._api_url = api_url if api_url.endswith("/") else api_url + "/"
        self._on_state_change = on_state_change
        self._reconnect_backoff = tuple(reconnect_backoff) or (1.0,)
        self._delivery_backoff = tuple(delivery_backoff)
        self._clock = clock
        self._state = CONNECTING
        self._detail = ""
        self._app_id = ""
        self._task: asyncio.Task[None] | None = None

    @property
    def config(self) -> SlackConfig:
        return self.instance.config_of(SlackConfig)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Connect in the background (returns at once)."""
        self._task = asyncio.create_task(self._run(), name=f"slack-socket-{self.instance.name}")

    async def stop(self) -> None:
        """Close the websocket and wait for the connection task to end."""
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._state != ERROR:
            self._set_state(DISCONNECTED, "bot stopped")

    def status(self) -> BotStatus:
        config = self.config
        return BotStatus(
            instance_name=self.instance.name,
            channel=Channel.SLACK,
            state=self._state,
            detail=self._detail,
            workspaces=((config.team_id, config.team_name),) if config.team_id else (),
            account_id=config.bot_user_id,
            account_name=self._app_id,
        )

    async def _run(self) -> None:
        failures = 0
        try:
            async with aiohttp.ClientSession() as session:
                while True:
                    try:
                        url = await self._open(session)
                        reason, greeted = await self._listen(session, url)
                    except _Refused as exc:
                        self._fail(str(exc), permanent=True)
                        return
                    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                        reason, greeted = f"cannot reach Slack: {exc or type(exc).__name__}", False
                    if greeted:
                        failures = 0
                    if reason == "refresh_requested" or reason == "warning":
                        # Slack asked us to move to a fresh connection: at once, nothing is lost in between
                        # (unacknowledged envelopes are delivered again).
                        self._set_state(CONNECTING, f"Slack asked to reconnect ({reason})")
                        continue
                    pause = self._reconnect_backoff[min(failures, len(self._reconnect_backoff) - 1)]
                    failures += 1
                    log.info("slack socket of %s: %s; reconnecting in %.1fs", self.instance.name, reason, pause)
                    self._set_state(CONNECTING, f"{reason}; reconnecting")
                    await asyncio.sleep(pause)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("slack socket of %s crashed", self.instance.name)
            self._fail(f"connection crashed: {exc}", permanent=False)
        finally:
            self.ended_at = self._clock()

    async def _open(self, session: aiohttp.ClientSession) -> str:
        """A fresh websocket URL from `apps.connections.open`; raises `_Refused` when the token will never do."""
        async with session.post(
            f"{self._api_url}apps.connections.open",
            headers={"Authorization": f"Bearer {self.config.app_token}"},
            timeout=aiohttp.ClientTimeout(total=OPEN_TIMEOUT_SECONDS),
        ) as response:
            if response.status == 429:
                raise aiohttp.ClientError(f"rate limited (Retry-After {response.headers.get('Retry-After', '?')})")
            if response.status >= 400:
                raise aiohttp.ClientError(f"apps.connections.open answered {response.status}")
            answer = orjson.loads(await response.read())
        if not isinstance(answer, dict):
            raise ValueError("apps.connections.open answered something else than a JSON object")
        if not answer.get("ok"):
            error = str(answer.get("error") or "unknown_error")
            if error in PERMANENT_ERRORS:
                raise _Refused(PERMANENT_ERRORS[error])
            raise aiohttp.ClientError(f"apps.connections.open failed: {error}")
        url = answer.get("url")
        if not isinstance(url, str) or not url:
            raise ValueError("apps.connections.open answered no url")
        return url

    async def _listen(self, session: aiohttp.ClientSession, url: str) -> tuple[str, bool]:
        """Read one websocket until it ends; returns why it ended and whether Slack had greeted it (`hello`)."""
        greeted = False
        self.connections += 1
        async with session.ws_connect(url, heartbeat=HEARTBEAT_SECONDS, autoping=True) as ws:
            async for frame in ws:
                if frame.type != aiohttp.WSMsgType.TEXT:
                    continue
                try:
                    envelope = orjson.loads(frame.data)
                except orjson.JSONDecodeError:
                    log.warning("slack socket of %s: a frame that is not JSON", self.instance.name)
                    continue
                if not isinstance(envelope, dict):
                    continue
                kind = envelope.get("type")
                if kind == "hello":
                    greeted = True
                    info = envelope.get("connection_info")
                    self._app_id = str(info.get("app_id") or "") if isinstance(info, dict) else ""
                    self._set_state(CONNECTED, "")
                elif kind == "disconnect":
                    reason = str(envelope.get("reason") or "disconnect")
                    if reason in PERMANENT_ERRORS:
                        raise _Refused(PERMANENT_ERRORS[reason])
                    return reason, greeted
                elif envelope.get("envelope_id"):
                    await self._envelope(ws, envelope)
        return f"connection closed ({ws.close_code})", greeted

    async def _envelope(self, ws: aiohttp.ClientWebSocketResponse, envelope: dict[str, Any]) -> None:
        """Store an `events_api` envelope, then ack it; other envelope types (interactivity, slash commands) are
        acknowledged unhandled so Slack does not show the user an error for a feature the hub does not offer."""
        envelope_id = str(envelope["envelope_id"])
        payload = envelope.get("payload")
        if envelope.get("type") == "events_api" and isinstance(payload, dict):
            stored = await self._store(payload, envelope)
            if not stored:
                return
        await ws.send_str(orjson.dumps({"envelope_id": envelope_id}).decode())

    async def _store(self, payload: dict[str, Any], envelope: dict[str, Any]) -> bool:
        """True once the event is stored (or is junk no redelivery would fix); False to leave it unacknowledged."""
        try:
            received = parse_envelope(payload, self.instance)
        except errors.InvalidArgumentError as exc:
            log.warning(
                "slack socket of %s: an envelope that is not an event (%s); acknowledged", self.instance.name, exc
            )
            return True
        # The edge span of the message's trace, as the gateway's request span is for a webhook: a new root.
        with _tracer.start_as_current_span("slack.receive", context=otel_context.Context()) as span:
            span.set_attribute(attrs.INSTANCE_NAME, self.instance.name)
            span.set_attribute("omni.slack.retry_attempt", int(envelope.get("retry_attempt") or 0))
            if received.channel_message_id:
                span.set_attribute(attrs.CHANNEL_MESSAGE_ID, received.channel_message_id)
            for attempt, pause in enumerate((*self._delivery_backoff, None), start=1):
                try:
                    await self._deliver(self.instance, received, trace_payload(payload))
                    return True
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if pause is None:
                        log.error(
                            "slack event of %s not stored after %d tries (%s); left for Slack to redeliver",
                            self.instance.name,
                            attempt,
                            exc,
                        )
                        return False
                    log.warning("slack event of %s not stored yet (%s); retrying", self.instance.name, exc)
                    await asyncio.sleep(pause)
        return False

    def _set_state(self, state: str, detail: str) -> None:
        changed = (state, detail) != (self._state, self._detail)
        self._state, self._detail = state, detail
        if changed:
            self._on_state_change()

    def _fail(self, detail: str, *, permanent: bool) -> None:
        log.warning("slack socket of %s: %s", self.instance.name, detail)
        self.permanent_failure = permanent
        self._set_state(ERROR, detail)
