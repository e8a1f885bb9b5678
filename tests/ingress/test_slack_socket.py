"""Slack Socket Mode in ingress, against a small aiohttp stand-in for Slack (apps.connections.open and the websocket)
with a real inbox on SQLite and PostgreSQL.

An `events_api` envelope is stored through the accept path and acknowledged only once its row exists; an event the
inbox could not take is left unacknowledged (Slack delivers it again); `disconnect` and a dropped connection lead to
a fresh connection; a refused app token ends in `error`; the host runs the connection for Slack instances with an
app token only, leased like a Discord bot.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestServer

from servicekit.channels import Channel
from servicekit.database import Database
from servicekit.instances import Instance, SlackConfig
from services.ingress.core.accept import IngressCore
from services.ingress.core.bots.discord_bot import Cursors
from services.ingress.core.bots.host import BotHost, bot_statuses
from services.ingress.core.bots.slack_socket import SlackSocketBot
from services.ingress.core.bots.status import CONNECTED, ERROR
from services.ingress.core.receivers.base import Received
from services.ingress.storage import BotLeaseStore, InboxStore
from simulators.slack import SlackSimulator
from tests.helpers.instances import DictDirectory
from tests.ingress.support import eventually
from tests.ingress.test_slack_receiver import BOT, DM, SECRET, TEAM, message_event

APP_TOKEN = "xapp-1-A0APP-1-secret"


@dataclasses.dataclass
class FakeSlack:
    """apps.connections.open and the Socket Mode websocket; records what the client sends back."""

    server: TestServer | None = None
    refuse: str = ""
    opens: int = 0
    sockets: list[web.WebSocketResponse] = dataclasses.field(default_factory=list)
    acks: list[str] = dataclasses.field(default_factory=list)
    on_ack: Callable[[str], Any] | None = None
    """Called (and awaited) when an ack arrives, before it is recorded: what the hub had done by then."""

    @property
    def api_url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("/api/"))

    async def open(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {APP_TOKEN}" or self.refuse:
            return web.json_response({"ok": False, "error": self.refuse or "invalid_auth"})
        self.opens += 1
        assert self.server is not None
        url = str(self.server.make_url(f"/link/{self.opens}")).replace("http://", "ws://")
        return web.json_response({"ok": True, "url": url})

    async def link(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.sockets.append(ws)
        await ws.send_json({"type": "hello", "num_connections": 1, "connection_info": {"app_id": "A0APP"}})
        async for frame in ws:
            if frame.type == WSMsgType.TEXT:
                envelope_id = orjson.loads(frame.data)["envelope_id"]
                if self.on_ack is not None:
                    await self.on_ack(envelope_id)
                self.acks.append(envelope_id)
        return ws

    @property
    def socket(self) -> web.WebSocketResponse:
        return self.sockets[-1]

    async def push(self, envelope_id: str, payload: dict[str, Any], *, retry_attempt: int = 0) -> None:
        await self.socket.send_json(
            {
                "envelope_id": envelope_id,
                "type": "events_api",
                "payload": payload,
                "accepts_response_payload": False,
                "retry_attempt": retry_attempt,
                "retry_reason": "",
            }
        )


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    fake = FakeSlack()
    app = web.Application()
    app.router.add_post("/api/apps.connections.open", fake.open)
    app.router.add_get("/link/{n}", fake.link)
    fake.server = TestServer(app)
    await fake.server.start_server()
    try:
        yield fake
    finally:
        for ws in fake.sockets:
            await ws.close()
        await fake.server.close()


def instance(app_token: str = APP_TOKEN, name: str = "slacky") -> Instance:
    return Instance(
        name=name,
        id=f"id-{name}",
        config=SlackConfig(
            bot_token="xoxb-test",
            signing_secret=SECRET,
            app_token=app_token,
            bot_user_id=BOT,
            team_id=TEAM,
            team_name="Acme",
        ),
    )


def dm(ts: str, text: str = "hello") -> dict[str, Any]:
    return message_event(ts, channel=DM, channel_type="im", text=text)


async def connected(bot: SlackSocketBot) -> bool:
    return bot.status().state == CONNECTED


async def running_bot(slack: FakeSlack, core: IngressCore, **options: Any) -> SlackSocketBot:
    bot = SlackSocketBot(
        instance(), core.accept, api_url=slack.api_url, reconnect_backoff=(0.05,), delivery_backoff=(), **options
    )
    await bot.start()
    await eventually(lambda: connected(bot), timeout=5)
    return bot


async def test_an_envelope_is_stored_before_it_is_acknowledged(slack: FakeSlack, store: InboxStore) -> None:
    core = IngressCore(store, DictDirectory(instance()))
    held_at_ack: list[bool] = []

    async def check(envelope_id: str) -> None:
        held_at_ack.append(await store.holds_any("slacky", "slack", [f"{DM}:1700000100.000100"]))

    slack.on_ack = check
    bot = await running_bot(slack, core)
    try:
        status = bot.status()
        assert (status.channel, status.account_id, status.account_name) == (Channel.SLACK, BOT, "A0APP")
        assert status.workspaces == ((TEAM, "Acme"),)
        await slack.push("env-1", dm("1700000100.000100", "oi"))

        async def acked() -> bool:
            return slack.acks == ["env-1"]

        await eventually(acked, timeout=5)
        assert held_at_ack == [True]
        assert await store.count_by_state() == {"received": 1}
        # Slack redelivering the same event (no ack seen in time) stores nothing new and is acknowledged again.
        await slack.push("env-1b", dm("1700000100.000100", "oi"), retry_attempt=1)

        async def acked_twice() -> bool:
            return slack.acks == ["env-1", "env-1b"]

        await eventually(acked_twice, timeout=5)
        assert await store.count_by_state() == {"received": 1}
    finally:
        await bot.stop()


async def test_ignored_and_foreign_envelopes_are_acknowledged(slack: FakeSlack, store: InboxStore) -> None:
    core = IngressCore(store, DictDirectory(instance()))
    bot = await running_bot(slack, core)
    try:
        await slack.push("env-bot", message_event("1700000101.000100", text="x", bot_id="B0OTHER", user="UOTHER"))
        await slack.socket.send_json({"envelope_id": "env-slash", "type": "slash_commands", "payload": {}})
        await slack.socket.send_json(
            {"envelope_id": "env-junk", "type": "events_api", "payload": {"type": "event_callback"}}
        )

        async def acked() -> bool:
            return slack.acks == ["env-bot", "env-slash", "env-junk"]

        await eventually(acked, timeout=5)
        assert await store.count_by_state() == {}
    finally:
        await bot.stop()


async def test_an_event_the_inbox_cannot_take_is_not_acknowledged(slack: FakeSlack, store: InboxStore) -> None:
    core = IngressCore(store, DictDirectory(instance()))
    failures = [1]

    async def flaky(target: Instance, received: Received, payload: dict[str, Any]) -> object:
        if failures:
            failures.pop()
            raise ConnectionError("inbox down")
        return await core.accept(target, received, payload)

    bot = SlackSocketBot(instance(), flaky, api_url=slack.api_url, reconnect_backoff=(0.05,), delivery_backoff=())
    await bot.start()
    try:
        await eventually(lambda: connected(bot), timeout=5)
        await slack.push("env-1", dm("1700000102.000100"))
        await asyncio.sleep(0.3)
        assert slack.acks == []
        assert await store.count_by_state() == {}
        await slack.push("env-1", dm("1700000102.000100"), retry_attempt=1)

        async def acked() -> bool:
            return slack.acks == ["env-1"]

        await eventually(acked, timeout=5)
        assert await store.count_by_state() == {"received": 1}
    finally:
        await bot.stop()


async def test_disconnect_leads_to_a_fresh_connection(slack: FakeSlack, store: InboxStore) -> None:
    core = IngressCore(store, DictDirectory(instance()))
    bot = await running_bot(slack, core)
    try:
        first = slack.socket
        await first.send_json({"type": "disconnect", "reason": "refresh_requested"})

        async def reconnected() -> bool:
            return slack.opens == 2 and len(slack.sockets) == 2 and await connected(bot)

        await eventually(reconnected, timeout=5)
        await slack.push("env-2", dm("1700000103.000100"))

        async def acked() -> bool:
            return slack.acks == ["env-2"]

        await eventually(acked, timeout=5)
        assert bot.connections == 2
    finally:
        await bot.stop()


async def test_a_dropped_connection_is_reopened(slack: FakeSlack, store: InboxStore) -> None:
    core = IngressCore(store, DictDirectory(instance()))
    changes: list[str] = []
    holder: list[SlackSocketBot] = []

    def record() -> None:
        if holder:
            changes.append(holder[0].status().state)

    bot = await running_bot(slack, core, on_state_change=record)
    holder.append(bot)
    try:
        await slack.socket.close()

        async def reconnected() -> bool:
            return slack.opens == 2 and len(slack.sockets) == 2 and await connected(bot)

        await eventually(reconnected, timeout=5)
        assert "connecting" in changes
        await slack.push("env-3", dm("1700000104.000100"))

        async def stored() -> bool:
            return await store.count_by_state() == {"received": 1}

        await eventually(stored, timeout=5)
    finally:
        await bot.stop()
    assert bot.status().state == "disconnected"


async def test_a_refused_app_token_ends_in_error(slack: FakeSlack, store: InboxStore) -> None:
    core = IngressCore(store, DictDirectory(instance()))
    bot = SlackSocketBot(instance("xapp-wrong"), core.accept, api_url=slack.api_url, reconnect_backoff=(0.05,))
    await bot.start()

    async def ended() -> bool:
        return not bot.running

    await eventually(ended, timeout=5)
    status = bot.status()
    assert (status.state, bot.permanent_failure) == (ERROR, True)
    assert "invalid_auth" in status.detail
    assert slack.opens == 0


async def test_the_host_runs_socket_mode_for_instances_with_an_app_token(
    slack: FakeSlack, store: InboxStore, db: Database
) -> None:
    socket_mode = instance()
    webhooks_only = instance(app_token="", name="hooks")
    directory = DictDirectory(socket_mode, webhooks_only)
    core = IngressCore(store, directory)
    leases = BotLeaseStore(db)

    def factory(target: Instance, cursors: Cursors, on_state_change: Callable[[], None]) -> SlackSocketBot:
        return SlackSocketBot(
            target, core.accept, api_url=slack.api_url, cursors=cursors, on_state_change=on_state_change
        )

    host = BotHost(leases, {Channel.SLACK: factory}, owner="replica-a", lease_seconds=1.0, renew_seconds=0.1)
    host.instances_changed(directory.instances)
    host.start()
    try:

        async def reported() -> bool:
            statuses = await bot_statuses(leases, "", time.time())
            return [(s.instance_name, s.channel, s.state, s.owner) for s in statuses] == [
                ("slacky", Channel.SLACK, CONNECTED, "replica-a")
            ]

        await eventually(reported, timeout=5)
        assert set(host.bots) == {"slacky"}
        await slack.push("env-h", dm("1700000105.000100"))

        async def acked() -> bool:
            return slack.acks == ["env-h"]

        await eventually(acked, timeout=5)
        # Removing the app token moves the instance to webhooks: the connection stops and its lease goes.
        directory.instances["slacky"] = instance(app_token="")
        host.instances_changed(directory.instances)

        async def stopped() -> bool:
            return not host.bots

        await eventually(stopped, timeout=5)
    finally:
        await host.stop()


async def test_against_the_slack_simulator(store: InboxStore) -> None:
    """The same flow against the shared Slack simulator: a mention delivered as `app_mention` and `message` (both
    acked, stored once), chatter not stored, the bot's own answer marking its thread, a follow-up in that thread
    answered, and a `disconnect` followed by a fresh connection that keeps delivering."""
    async with SlackSimulator(socket_ack_timeout=1.0) as sim:
        team = sim.add_team()
        general = sim.add_channel(team.id, "general", is_general=True)
        app = sim.add_bot(team.id)
        alice = sim.add_user(team.id, "alice")
        simmed = Instance(
            name="simmed",
            id="id-simmed",
            config=SlackConfig(
                bot_token=app.token,
                signing_secret=app.signing_secret,
                app_token=app.app_token,
                bot_user_id=app.user_id,
                team_id=team.id,
                team_name=team.name,
            ),
        )
        core = IngressCore(store, DictDirectory(simmed))
        bot = SlackSocketBot(simmed, core.accept, api_url=sim.api_url, reconnect_backoff=(0.05,))
        await bot.start()
        try:
            await eventually(lambda: connected(bot), timeout=5)
            root, deliveries = await sim.post_user_message(general.id, alice.id, f"<@{app.user_id}> hi")
            assert sorted(d.event_type for d in deliveries) == ["app_mention", "message"]
            assert all(d.acked for d in deliveries)
            assert await store.count_by_state() == {"received": 1}
            await sim.post_user_message(general.id, alice.id, "lunch?")
            await sim.post_bot_message(general.id, "hello!", bot=app, thread_ts=root["ts"])
            assert await store.count_by_state() == {"received": 1, "ignored": 1}
            await sim.post_user_message(general.id, alice.id, "thanks", thread_ts=root["ts"])
            assert await store.count_by_state() == {"received": 2, "ignored": 1}

            await sim.socket_disconnect(app)

            async def reconnected() -> bool:
                return bot.connections == 2 and await connected(bot)

            await eventually(reconnected, timeout=5)
            dm_channel = sim.open_dm(app, alice.id)
            _, private = await sim.post_user_message(dm_channel.id, alice.id, "psst")
            assert [d.acked for d in private] == [True]
            assert await store.count_by_state() == {"received": 3, "ignored": 1}
        finally:
            await bot.stop()
