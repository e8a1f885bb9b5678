"""`SlackSimulator`: the Web API, Events API delivery, Socket Mode and control endpoints on one aiohttp app, plus the
Python API tests use to stage workspaces, post users' messages, read what apps posted and inject failures."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson
from aiohttp import web

from simulators.slack.control import ControlApi
from simulators.slack.events import HttpEvents
from simulators.slack.objects import (
    app_mention_event,
    bot_message,
    file_object,
    message_event,
    user_message,
)
from simulators.slack.socket_mode import SocketMode
from simulators.slack.state import Attempt, Bot, Channel, Delivery, Fault, Post, SlackState, Team, User
from simulators.slack.webapi import WebApi
from simulators.slack.wire import event_callback, new_envelope_id, new_event_id


class SlackSimulator:
    """An in-process Slack that unmodified slack_sdk clients talk to.

    Web API: `AsyncWebClient(token=bot.token, base_url=sim.api_url)`. Socket Mode:
    `SocketModeClient(app_token=bot.app_token, web_client=AsyncWebClient(base_url=sim.api_url))`. Events API: set
    `bot.request_url` (or `request_url=` at `add_bot`) and events are POSTed there, signed with
    `bot.signing_secret`.
    """

    def __init__(
        self,
        *,
        ack_timeout: float = 3.0,
        retry_delays: Sequence[float] = (0.0, 0.2, 0.5),
        socket_ack_timeout: float = 3.0,
        socket_max_retries: int = 3,
        disconnect_grace: float = 0.5,
        echo_bot_posts: bool = True,
    ) -> None:
        """Args:
        ack_timeout: Seconds Slack waits for a Request URL's 2xx before counting an `http_timeout` (3 s on Slack).
        retry_delays: The waits before retries 1..n of an unacknowledged event (Slack: 0, ~60, ~300 s; the
            default is short so tests and demos do not stall).
        socket_ack_timeout: Seconds before an unacked Socket Mode envelope is sent again.
        socket_max_retries: Redeliveries of an unacked envelope.
        disconnect_grace: Seconds between a `disconnect` frame and closing the socket (Slack keeps it ~10 s).
        echo_bot_posts: Deliver an app's own posts back to the apps in the channel as `message` events with
            `bot_id`, as Slack does (the hub must not answer them).
        """
        self.url = ""
        self.state = SlackState()
        self.echo_bot_posts = echo_bot_posts
        self.http_events = HttpEvents(ack_timeout=ack_timeout, retry_delays=retry_delays)
        self.socket_mode = SocketMode(
            self.state,
            ack_timeout=socket_ack_timeout,
            max_retries=socket_max_retries,
            disconnect_grace=disconnect_grace,
        )
        self.web = WebApi(
            self.state,
            base_url=lambda: self.url,
            issue_socket_url=lambda bot: self.socket_mode.issue_url(bot, self.ws_url),
            on_bot_post=self._echo_bot_post,
        )
        self.control = ControlApi(self)
        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------------ lifecycle

    @property
    def api_url(self) -> str:
        """The Web API base for `AsyncWebClient(base_url=...)`, ending with `/` as slack_sdk requires."""
        return f"{self.url}/api/"

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://", 1)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Serve on `host:port` (0 picks a free port); `url` is set when this returns."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        self.web.add_routes(app)
        app.router.add_get("/socket", self.socket_mode.handle)
        self.control.add_routes(app)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        self.url = f"http://{host}:{self._runner.addresses[0][1]}"
        self.http_events.open()

    async def stop(self) -> None:
        """Cancel deliveries in flight, close the Socket Mode connections and stop serving."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.socket_mode.close_all()
        await self.http_events.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> SlackSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ staging

    def add_team(self, name: str = "Acme", team_id: str | None = None) -> Team:
        """A workspace."""
        return self.state.add_team(name, team_id)

    def add_bot(
        self,
        team_id: str,
        name: str = "omni-bot",
        *,
        token: str | None = None,
        signing_secret: str | None = None,
        app_token: str | None = None,
        request_url: str | None = None,
        events: Iterable[str] | None = None,
    ) -> Bot:
        """An app installed in the team: bot user, `xoxb-` token, signing secret and `xapp-` token (generated when
        None). It joins the team's `#general`-like channels (`is_general`); add it to others with `join`.

        `events` are the event types it subscribes to (default `message` and `app_mention`).
        """
        bot = self.state.add_bot(team_id, name, token, signing_secret, app_token, request_url)
        if events is not None:
            bot.events = set(events)
        return bot

    def add_user(self, team_id: str, name: str, *, real_name: str | None = None, email: str | None = None) -> User:
        """A human member of the team."""
        return self.state.add_user(team_id, name, real_name=real_name, email=email)

    def add_channel(
        self,
        team_id: str,
        name: str = "general",
        *,
        private: bool = False,
        members: Iterable[str] | None = None,
        is_general: bool = False,
    ) -> Channel:
        """A public (`C…`) or private (`G…`) channel. `members` are user ids (bot users included); None means every
        current user and bot of the team. An `is_general` channel also gets users and bots added later."""
        if members is None:
            chosen = {u.id for u in self.state.users.values() if u.team_id == team_id}
        else:
            chosen = {str(m) for m in members}
        return self.state.add_channel(team_id, name, private, chosen, is_general)

    def join(self, channel_id: str, user_id: str) -> None:
        """Make a user (or a bot user) a member, silently (see `join_channel` for the event)."""
        self.state.channel(channel_id).members.add(user_id)

    def open_dm(self, bot: Bot, user_id: str) -> Channel:
        """The `im` between the bot and a user (`D…`), opened on first use."""
        channel, _ = self.state.open_conversation(bot.team_id, [bot.user_id, user_id])
        return channel

    def set_request_url(self, bot: Bot, url: str | None) -> None:
        """Where the app's Events API POSTs go (None: nowhere, unless a Socket Mode connection is open)."""
        bot.request_url = url

    # ------------------------------------------------------------------ inbound traffic (users → apps)

    async def post_user_message(
        self,
        channel_id: str,
        user_id: str,
        text: str,
        *,
        thread_ts: str | None = None,
        files: Sequence[Mapping[str, Any]] = (),
        wait: bool = True,
    ) -> tuple[dict[str, Any], list[Delivery]]:
        """A user's message in a channel, DM or thread (`thread_ts`): stored, then delivered to every app in the
        conversation as a `message` event, plus an `app_mention` to an app whose `<@U…>` the text contains.

        Args:
            files: `{name, data (bytes|str), mimetype?, title?}` each; the message gets subtype `file_share` and
                `files[]` whose `url_private` serves the bytes to the team's bot tokens.
            wait: Await the deliveries (HTTP retries included; Socket Mode until acked or given up); with False
                they run in the background and fill in the returned `Delivery` objects later.

        Returns the stored message and the deliveries.
        """
        channel = self.state.channel(channel_id)
        user = self.state.user(user_id)
        if user.id not in channel.members:
            if channel.kind in ("im", "mpim"):
                raise ValueError(f"user {user_id} is not in conversation {channel_id}")
            channel.members.add(user.id)
        if thread_ts is not None and thread_ts not in channel.by_ts:
            raise ValueError(f"no message {thread_ts} in {channel_id}")
        file_objects = []
        for spec in files:
            stored = self.state.new_file(
                channel.team_id, str(spec["name"]), spec.get("title"), user.id, spec.get("mimetype")
            )
            data = spec.get("data", b"")
            stored.data = bytes(data) if isinstance(data, bytes | bytearray) else str(data).encode()
            stored.uploaded = True
            file_objects.append(stored)
        message = user_message(self.state, channel, user, text, thread_ts)
        if file_objects:
            message.update(
                {
                    "subtype": "file_share",
                    "upload": False,
                    "display_as_bot": False,
                    "files": [file_object(s, self.url, channel.id, message["ts"]) for s in file_objects],
                }
            )
        self.state.store(channel, message)
        deliveries = await self._fan_out(channel, message, wait=wait)
        return message, deliveries

    async def post_bot_message(
        self,
        channel_id: str,
        text: str,
        *,
        bot: Bot | None = None,
        bot_id: str | None = None,
        username: str | None = None,
        thread_ts: str | None = None,
        legacy: bool = False,
        wait: bool = True,
    ) -> tuple[dict[str, Any], list[Delivery]]:
        """A bot's message appearing in a channel: one of the apps (`bot`, carries `bot_id`/`app_id`/`user`) or a
        foreign integration (`subtype: bot_message` with `bot_id`/`username`); delivered like a user message."""
        channel = self.state.channel(channel_id)
        message = bot_message(
            self.state, channel, bot, text, thread_ts, bot_id=bot_id, username=username, legacy=legacy
        )
        self.state.store(channel, message)
        deliveries = await self._fan_out(channel, message, wait=wait)
        return message, deliveries

    async def edit_message(
        self, channel_id: str, ts: str, text: str, *, wait: bool = True
    ) -> tuple[dict[str, Any], list[Delivery]]:
        """Edit a stored message; the apps get `message` subtype `message_changed` (`hidden`, `message`,
        `previous_message`)."""
        channel = self.state.channel(channel_id)
        current = channel.by_ts[ts]
        previous = dict(current)
        current["text"] = text
        event_ts = self.state.clock.next()
        current["edited"] = {"user": current.get("user"), "ts": event_ts}
        event = {
            "type": "message",
            "subtype": "message_changed",
            "hidden": True,
            "message": dict(current),
            "previous_message": previous,
            "channel": channel.id,
            "ts": event_ts,
            "event_ts": event_ts,
            "channel_type": channel.kind,
        }
        return event, await self._deliver_to_members(channel, event, wait=wait)

    async def delete_message(
        self, channel_id: str, ts: str, *, wait: bool = True
    ) -> tuple[dict[str, Any], list[Delivery]]:
        """Delete a stored message; the apps get `message` subtype `message_deleted` (`deleted_ts`)."""
        channel = self.state.channel(channel_id)
        previous = channel.by_ts.pop(ts)
        channel.messages.remove(previous)
        event_ts = self.state.clock.next()
        event = {
            "type": "message",
            "subtype": "message_deleted",
            "hidden": True,
            "deleted_ts": ts,
            "previous_message": previous,
            "channel": channel.id,
            "ts": event_ts,
            "event_ts": event_ts,
            "channel_type": channel.kind,
        }
        return event, await self._deliver_to_members(channel, event, wait=wait)

    async def join_channel(
        self, channel_id: str, user_id: str, *, wait: bool = True
    ) -> tuple[dict[str, Any], list[Delivery]]:
        """A user joins: member added, and a `message` subtype `channel_join` stored and delivered."""
        channel = self.state.channel(channel_id)
        channel.members.add(user_id)
        ts = self.state.clock.next()
        message = {
            "type": "message",
            "subtype": "channel_join",
            "user": user_id,
            "text": f"<@{user_id}> has joined the channel",
            "ts": ts,
            "team": channel.team_id,
        }
        self.state.store(channel, message)
        return message, await self._deliver_to_members(channel, message_event(channel, message), wait=wait)

    async def deliver_event(
        self, bot: Bot, event: dict[str, Any], *, event_id: str | None = None, wait: bool = True
    ) -> Delivery:
        """Wrap any `event` in an `event_callback` envelope for the app and deliver it: over Socket Mode when the
        app has a connection open, else signed to its Request URL (transport `none` when it has neither)."""
        envelope = event_callback(
            team_id=bot.team_id,
            app_id=bot.app_id,
            bot_user_id=bot.user_id,
            verification_token=bot.verification_token,
            event=event,
            event_id=event_id or new_event_id(),
        )
        return await self.deliver_envelope(bot, envelope, wait=wait)

    async def deliver_envelope(self, bot: Bot, envelope: dict[str, Any], *, wait: bool = True) -> Delivery:
        """Deliver a prepared envelope as is (e.g. the same `event_id` twice, to test deduplication)."""
        event = envelope.get("event") or {}
        transport = "none"
        if self.socket_mode.open_connections(bot.app_id):
            transport = "socket"
        elif bot.request_url:
            transport = "http"
        delivery = Delivery(
            bot.app_id, bot.team_id, str(envelope.get("event_id", "")), str(event.get("type", "")), transport, envelope
        )
        self.state.deliveries.append(delivery)
        if transport == "socket":
            delivery.envelope_id = new_envelope_id()
            coro: Any = self.socket_mode.deliver(bot, delivery)
        elif transport == "http":
            assert bot.request_url is not None
            coro = self.http_events.deliver(bot.request_url, bot.signing_secret, delivery)
        else:
            delivery.done.set()
            return delivery
        if wait:
            await coro
        else:
            self._background(coro)
        return delivery

    async def url_verification(self, bot: Bot, challenge: str | None = None, url: str | None = None) -> Attempt:
        """Slack's Request URL check: a signed `{"type": "url_verification", "challenge"}`; the answer's body must
        echo the challenge."""
        body = {
            "token": bot.verification_token,
            "challenge": challenge or new_event_id() + "chal",
            "type": "url_verification",
        }
        return await self.post_signed(bot, body, url=url)

    async def post_signed(
        self,
        bot: Bot,
        payload: Mapping[str, Any] | bytes,
        *,
        url: str | None = None,
        secret: str | None = None,
        timestamp: str | int | None = None,
        tamper: bool = False,
        omit_headers: Iterable[str] = (),
        unsigned: bool = False,
        retry_num: int = 0,
        retry_reason: str = "",
        extra_headers: dict[str, str] | None = None,
    ) -> Attempt:
        """One POST to the Request URL (or `url`), no retries, for signature and edge-case tests.

        Args:
            payload: A JSON object or raw bytes.
            secret: Sign with this instead of the app's signing secret (a wrong secret).
            timestamp: `X-Slack-Request-Timestamp` to send and sign (e.g. `time.time() - 600`, stale).
            tamper: Sign the body, then send it with one byte changed.
            omit_headers: Header names to leave out (e.g. `X-Slack-Signature`).
            unsigned: Send no signature at all.
            retry_num/retry_reason: Send retry headers as Slack's retries carry them.
        """
        target = url or bot.request_url
        if not target:
            raise ValueError("the app has no request_url")
        body = payload if isinstance(payload, bytes) else orjson.dumps(dict(payload))
        sent = body
        if tamper:
            sent = body.replace(b"}", b" }", 1) if b"}" in body else body + b" "
        return await self.http_events.post(
            target,
            sent,
            secret=None if unsigned else (secret or bot.signing_secret),
            timestamp=str(int(timestamp)) if timestamp is not None else None,
            retry_num=retry_num,
            retry_reason=retry_reason,
            omit_headers=omit_headers,
            extra_headers=extra_headers,
            signed_body=body,
        )

    async def _fan_out(self, channel: Channel, message: dict[str, Any], *, wait: bool) -> list[Delivery]:
        """`message` to every app in the conversation, plus `app_mention` to each app the text mentions."""
        event = message_event(channel, message)
        jobs = []
        for bot in self._member_bots(channel):
            if "message" in bot.events:
                jobs.append(self.deliver_event(bot, dict(event), wait=wait))
            mentioned = f"<@{bot.user_id}>" in str(message.get("text", ""))
            if "app_mention" in bot.events and mentioned and message.get("user") != bot.user_id:
                jobs.append(self.deliver_event(bot, app_mention_event(channel, message), wait=wait))
        return list(await asyncio.gather(*jobs))

    async def _deliver_to_members(self, channel: Channel, event: dict[str, Any], *, wait: bool) -> list[Delivery]:
        bots = [b for b in self._member_bots(channel) if "message" in b.events]
        return list(await asyncio.gather(*(self.deliver_event(b, dict(event), wait=wait) for b in bots)))

    def _member_bots(self, channel: Channel) -> list[Bot]:
        return [b for b in self.state.bots.values() if b.team_id == channel.team_id and b.user_id in channel.members]

    def _echo_bot_post(self, bot: Bot, channel: Channel, message: dict[str, Any]) -> None:
        if self.echo_bot_posts:
            self._background(self._fan_out(channel, message, wait=True))

    def _background(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ recordings (apps → Slack)

    @property
    def posts(self) -> list[Post]:
        """What apps posted (`chat.postMessage`, file shares), in order."""
        return self.state.posts

    @property
    def deliveries(self) -> list[Delivery]:
        """Every event delivery (HTTP or Socket Mode), in order."""
        return self.state.deliveries

    @property
    def calls(self) -> list[tuple[str, dict[str, Any]]]:
        """Every Web API call as (method, parameters without the token)."""
        return self.state.calls

    async def wait_for_posts(self, count: int, timeout: float = 5.0) -> list[Post]:
        """Wait until at least `count` posts were made; TimeoutError otherwise."""
        async with asyncio.timeout(timeout):
            while len(self.state.posts) < count:
                self.state.posted.clear()
                await self.state.posted.wait()
        return list(self.state.posts)

    def messages(self, channel_id: str) -> list[dict[str, Any]]:
        """Every stored message of a conversation (replies included), oldest first."""
        return list(self.state.channel(channel_id).messages)

    def thread(self, channel_id: str, thread_ts: str) -> list[dict[str, Any]]:
        """A thread's replies (not the parent), oldest first."""
        return self.state.channel(channel_id).replies(thread_ts)

    def file_bytes(self, file_id: str) -> bytes:
        """What was uploaded for a file."""
        return self.state.files[file_id].data

    # ------------------------------------------------------------------ faults and knobs

    def fail_next(
        self,
        method: str,
        *,
        status: int | None = None,
        retry_after: int | None = 1,
        error: str | None = None,
        count: int = 1,
    ) -> None:
        """The next `count` calls of a Web API method (`*` for any) fail.

        Without `error`: HTTP `status` (429 by default) with `{"ok": false, "error": "ratelimited"}` and, for a
        429, `Retry-After: retry_after` (whole seconds: slack_sdk reads only its first digit). With `error`:
        `{"ok": false, "error": error}` with HTTP 200 (or `status`).
        """
        code = status if status is not None else (200 if error else 429)
        reason = error or ("ratelimited" if code == 429 else "internal_error")
        header = retry_after if code == 429 else None
        self.state.faults.extend([Fault(method, code, reason, header)] * count)

    def set_latency(self, seconds: float, method: str | None = None) -> None:
        """Delay every Web API answer (or one method's) by `seconds`."""
        if method is None:
            self.web.latency = seconds
        else:
            self.web.method_latency[method] = seconds

    # ------------------------------------------------------------------ Socket Mode control

    def socket_connections(self, bot: Bot) -> int:
        """The app's open Socket Mode connections."""
        return len(self.socket_mode.open_connections(bot.app_id))

    def socket_connect_count(self, bot: Bot) -> int:
        """Socket Mode connections the app ever opened."""
        return self.socket_mode.connect_counts.get(bot.app_id, 0)

    async def wait_for_socket(self, bot: Bot, connections: int = 1, timeout: float = 5.0) -> None:
        """Wait until the app has at least `connections` open; TimeoutError otherwise."""
        async with asyncio.timeout(timeout):
            while self.socket_connections(bot) < connections:
                await self.socket_mode.changed()

    async def wait_for_connects(self, bot: Bot, count: int, timeout: float = 5.0) -> None:
        """Wait until the app has opened `count` Socket Mode connections in total (reconnects included)."""
        async with asyncio.timeout(timeout):
            while self.socket_connect_count(bot) < count or not self.socket_connections(bot):
                await self.socket_mode.changed()

    @property
    def socket_acks(self) -> list[dict[str, Any]]:
        """Every `{"envelope_id", ...}` ack Socket Mode clients sent."""
        return self.socket_mode.acks

    async def socket_disconnect(
        self, bot: Bot, reason: str = "refresh_requested", close_after: float | None = None
    ) -> int:
        """Send `{"type": "disconnect", "reason"}` on the app's connections and close them after `close_after`
        (default `disconnect_grace`); returns how many."""
        return await self.socket_mode.disconnect(bot.app_id, reason, close_after)

    async def drop_sockets(self, bot: Bot | None = None) -> int:
        """Close the app's (or every) Socket Mode connection without warning."""
        return await self.socket_mode.drop(bot.app_id if bot else None)

    def reset(self) -> None:
        """Forget posts, deliveries, calls, acks and faults; teams, apps, users and messages stay."""
        self.state.posts.clear()
        self.state.deliveries.clear()
        self.state.calls.clear()
        self.state.faults.clear()
        self.socket_mode.acks.clear()


def now() -> int:
    """Seconds since the epoch (for stale-timestamp tests: `now() - 600`)."""
    return int(time.time())
