"""`SlackSender` against a small fake of Slack's Web API on 127.0.0.1, driven through unmodified slack_sdk.

The fake keeps what Slack keeps (channels, messages with their threads, DMs, uploaded files), answers in Slack's
shapes (HTTP 200 with `ok: false` and an error word, 429 with `Retry-After`, cursor pages) and can be told to
fail a method, so each test reads back what really crossed the wire (and a fault can be aimed at one call, which
the simulator's generic faults cannot). A last test runs the whole round trip on `simulators.slack` as well.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, cast

import aiohttp
import pytest
from aiohttp import web
from omni.channels.v1 import channels_service_pb2

from servicekit.convert import instance_to_proto
from servicekit.instances import DiscordConfig, Instance, SlackConfig
from servicekit.messages import Media
from services.channels.core.models import ConnectionState, OutboundPart
from services.channels.core.senders.base import (
    REASON_MISCONFIGURED,
    REASON_NOT_FOUND,
    REASON_REJECTED,
    REASON_UNAUTHORIZED,
    Account,
    ChannelRejectedError,
    ChannelSender,
    ChannelTransientError,
    ChatChannel,
    SendTarget,
)
from services.channels.core.senders.slack import SlackSender
from services.channels.core.service import ChannelsCore
from services.channels.servicer import ChannelsServicer
from simulators.slack import Bot as SimBot
from simulators.slack import SlackSimulator

TOKEN = "xoxb-acme-bot"
OTHER_TOKEN = "xoxb-other-bot"
CHANNEL = "C0GENERAL"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


@dataclass
class FakeBot:
    user_id: str
    user: str
    bot_id: str
    team_id: str = "T0ACME"
    team: str = "Acme Corp"


@dataclass
class Fault:
    status: int = 200
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    raw: str | None = None


@dataclass
class Call:
    method: str
    token: str
    params: dict[str, Any]


class FakeSlack:
    """Slack's Web API as far as the sender uses it."""

    def __init__(self) -> None:
        self.bots: dict[str, FakeBot] = {
            TOKEN: FakeBot(user_id="U0OMNIBOT", user="omni", bot_id="B0OMNI"),
            OTHER_TOKEN: FakeBot(user_id="U0OTHER", user="other", bot_id="B0OTHER"),
        }
        self.channels: list[dict[str, Any]] = [
            {"id": CHANNEL, "name": "general"},
            {"id": "C0RANDOM", "name": "random"},
            {"id": "G0SECRET", "name": "secret", "is_private": True},
        ]
        self.messages: list[dict[str, Any]] = []
        self.uploads: dict[str, bytes] = {}
        self.calls: list[Call] = []
        self.faults: dict[str, list[Fault]] = {}
        self.page_size = 2
        self.report_shares = False
        self.url = ""
        self._clock = 1_700_000_000.0
        self._runner: web.AppRunner | None = None

    # -- helpers the tests use

    def fail(self, method: str, *faults: Fault) -> None:
        self.faults.setdefault(method, []).extend(faults)

    def called(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def post(self, bot: FakeBot, channel: str, text: str, thread_ts: str = "", **extra: Any) -> dict[str, Any]:
        """Store a message as Slack does: `&`, `<`, `>` escaped, `user` and `bot_id` of the posting bot."""
        self._clock += 1.0
        message: dict[str, Any] = {
            "type": "message",
            "channel": channel,
            "ts": f"{self._clock:.6f}",
            "text": text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"),
            "user": bot.user_id,
            "bot_id": bot.bot_id,
            **extra,
        }
        if thread_ts:
            message["thread_ts"] = thread_ts
        self.messages.append(message)
        return message

    # -- server

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/upload/{file_id}", self._upload)
        app.router.add_route("*", "/api/{method}", self._api)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def api_url(self) -> str:
        return self.url + "/api/"

    async def _upload(self, request: web.Request) -> web.StreamResponse:
        self.uploads[request.match_info["file_id"]] = await request.read()
        return web.Response(text=f"OK - {len(self.uploads[request.match_info['file_id']])}")

    async def _api(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        params: dict[str, Any] = dict(request.query)
        if request.content_type == "application/json":
            params.update(await request.json())
        elif request.can_read_body:
            params.update(await request.post())
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        self.calls.append(Call(method, token, params))
        queued = self.faults.get(method)
        if queued:
            fault = queued.pop(0)
            if fault.delay:
                await asyncio.sleep(fault.delay)
            if fault.raw is not None:
                return web.Response(status=fault.status, text=fault.raw, content_type="text/html")
            return web.json_response(fault.body or {"ok": False}, status=fault.status, headers=fault.headers)
        bot = self.bots.get(token)
        if bot is None:
            return web.json_response({"ok": False, "error": "invalid_auth" if token else "not_authed"})
        handler = getattr(self, "_" + method.replace(".", "_"), None)
        if handler is None:
            return web.json_response({"ok": False, "error": "unknown_method"})
        return web.json_response(handler(bot, params))

    def _known(self, channel: str) -> bool:
        return channel.startswith("D") or any(c["id"] == channel for c in self.channels)

    def _auth_test(self, bot: FakeBot, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "url": "https://acme.slack.com/",
            "team": bot.team,
            "user": bot.user,
            "team_id": bot.team_id,
            "user_id": bot.user_id,
            "bot_id": bot.bot_id,
        }

    def _chat_postMessage(self, bot: FakeBot, params: dict[str, Any]) -> dict[str, Any]:
        channel = str(params.get("channel", ""))
        if not self._known(channel):
            return {"ok": False, "error": "channel_not_found"}
        if not params.get("text"):
            return {"ok": False, "error": "no_text"}
        message = self.post(bot, channel, str(params["text"]), str(params.get("thread_ts") or ""))
        return {"ok": True, "channel": channel, "ts": message["ts"], "message": message}

    def _conversations_open(self, bot: FakeBot, params: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "channel": {"id": "D" + str(params["users"])[1:]}}

    def _conversations_history(self, bot: FakeBot, params: dict[str, Any]) -> dict[str, Any]:
        channel, oldest = str(params["channel"]), float(params.get("oldest") or 0)
        found = [
            m
            for m in self.messages
            if m["channel"] == channel
            and float(m["ts"]) >= oldest
            and m.get("thread_ts", m["ts"]) == m["ts"]  # thread replies are not in the history
        ]
        return self._page(list(reversed(found)), params, "messages")

    def _conversations_replies(self, bot: FakeBot, params: dict[str, Any]) -> dict[str, Any]:
        channel, thread, oldest = str(params["channel"]), str(params["ts"]), float(params.get("oldest") or 0)
        found = [
            m for m in self.messages if m["channel"] == channel and (m["ts"] == thread or m.get("thread_ts") == thread)
        ]
        if not found:
            return {"ok": False, "error": "thread_not_found"}
        return self._page([m for m in found if float(m["ts"]) >= oldest], params, "messages")

    def _conversations_list(self, bot: FakeBot, params: dict[str, Any]) -> dict[str, Any]:
        assert params["types"] == "public_channel,private_channel"
        return self._page(self.channels, params, "channels")

    def _page(self, items: list[dict[str, Any]], params: dict[str, Any], key: str) -> dict[str, Any]:
        start = int(params.get("cursor") or 0)
        size = min(int(params.get("limit") or 100), self.page_size)
        page = items[start : start + size]
        more = start + size < len(items)
        return {"ok": True, key: page, "response_metadata": {"next_cursor": str(start + size) if more else ""}}

    def _files_getUploadURLExternal(self, bot: FakeBot, params: dict[str, Any]) -> dict[str, Any]:
        file_id = f"F{len(self.uploads) + 100}"
        self.uploads.setdefault(file_id, b"")
        return {"ok": True, "upload_url": f"{self.url}/upload/{file_id}", "file_id": file_id}

    def _files_completeUploadExternal(self, bot: FakeBot, params: dict[str, Any]) -> dict[str, Any]:
        files = json.loads(str(params["files"]))
        channel = str(params.get("channel_id") or "")
        if not self._known(channel):
            return {"ok": False, "error": "channel_not_found"}
        shared = [{"id": f["id"], "title": f.get("title", "")} for f in files]
        message = self.post(
            bot, channel, str(params.get("initial_comment") or ""), str(params.get("thread_ts") or ""), files=shared
        )
        if self.report_shares:
            for f in shared:
                f["shares"] = {"public": {channel: [{"ts": message["ts"]}]}}
        return {"ok": True, "files": shared}


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    fake = FakeSlack()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
async def sender(slack: FakeSlack) -> AsyncIterator[SlackSender]:
    made = SlackSender(api_url=slack.api_url, send_timeout_seconds=5.0, max_ratelimit_wait_seconds=2.0)
    try:
        yield made
    finally:
        await made.aclose()


@pytest.fixture
def instance() -> Instance:
    return Instance(name="acme-slack", config=SlackConfig(bot_token=TOKEN, signing_secret="s"))


def _bot(slack: FakeSlack) -> FakeBot:
    return slack.bots[TOKEN]


def test_the_sender_is_a_channel_sender(sender: SlackSender) -> None:
    checked: ChannelSender = sender
    assert checked.channel.value == "slack"


# ---------------------------------------------------------------------- text


async def test_a_reply_stays_in_the_users_thread(slack: FakeSlack, sender: SlackSender, instance: Instance) -> None:
    ts = await sender.send_text(instance, SendTarget(chat_id=CHANNEL, thread_id="1699999999.000100"), "hello")

    [message] = slack.messages
    assert message["ts"] == ts
    assert message["channel"] == CHANNEL
    assert message["thread_ts"] == "1699999999.000100"
    assert message["text"] == "hello"
    [call] = slack.called("chat.postMessage")
    assert call.token == TOKEN


async def test_the_answered_message_starts_the_thread_when_no_thread_is_named(
    slack: FakeSlack, sender: SlackSender, instance: Instance
) -> None:
    await sender.send_text(instance, SendTarget(chat_id=CHANNEL, reply_to="1699999999.000200"), "a")
    await sender.send_text(instance, SendTarget(chat_id=CHANNEL), "b")

    first, second = slack.messages
    assert first["thread_ts"] == "1699999999.000200"
    assert "thread_ts" not in second
    assert "thread_ts" not in slack.called("chat.postMessage")[1].params


async def test_a_user_id_is_sent_to_a_dm_opened_once(slack: FakeSlack, sender: SlackSender, instance: Instance) -> None:
    await sender.send_text(instance, SendTarget(chat_id="U0ALICE"), "one")
    await sender.send_text(instance, SendTarget(chat_id="U0ALICE"), "two")

    assert [c.params["users"] for c in slack.called("conversations.open")] == ["U0ALICE"]
    assert [(m["channel"], m["text"]) for m in slack.messages] == [("D0ALICE", "one"), ("D0ALICE", "two")]


async def test_one_client_per_token(slack: FakeSlack, sender: SlackSender, instance: Instance) -> None:
    other = Instance(name="other", config=SlackConfig(bot_token=OTHER_TOKEN))
    await sender.send_text(instance, SendTarget(chat_id=CHANNEL), "a")
    await sender.send_text(other, SendTarget(chat_id=CHANNEL), "b")
    await sender.send_text(instance, SendTarget(chat_id=CHANNEL), "c")

    assert [c.token for c in slack.called("chat.postMessage")] == [TOKEN, OTHER_TOKEN, TOKEN]
    assert len(sender._clients) == 2
    assert sender._clients[TOKEN].web.session is sender._clients[OTHER_TOKEN].web.session


async def test_the_client_cache_is_bounded(slack: FakeSlack) -> None:
    small = SlackSender(api_url=slack.api_url, max_clients=1)
    try:
        await small.send_text(Instance(name="a", config=SlackConfig(bot_token=TOKEN)), SendTarget(CHANNEL), "x")
        await small.send_text(Instance(name="b", config=SlackConfig(bot_token=OTHER_TOKEN)), SendTarget(CHANNEL), "y")
        assert list(small._clients) == [OTHER_TOKEN]
    finally:
        await small.aclose()


# ---------------------------------------------------------------------- rate limits and failures


async def test_a_short_429_is_waited_out_and_retried(slack: FakeSlack, sender: SlackSender, instance: Instance) -> None:
    slack.fail("chat.postMessage", Fault(429, {"ok": False, "error": "ratelimited"}, {"Retry-After": "1"}))
    started = time.monotonic()

    ts = await sender.send_text(instance, SendTarget(chat_id=CHANNEL), "after the pause")

    assert time.monotonic() - started >= 0.9
    assert len(slack.called("chat.postMessage")) == 2
    assert [m["ts"] for m in slack.messages] == [ts]


async def test_a_long_429_is_handed_back_with_slacks_pause(
    slack: FakeSlack, sender: SlackSender, instance: Instance
) -> None:
    slack.fail("chat.postMessage", Fault(429, {"ok": False, "error": "ratelimited"}, {"Retry-After": "30"}))

    with pytest.raises(ChannelTransientError) as caught:
        await sender.send_text(instance, SendTarget(chat_id=CHANNEL), "x")

    assert caught.value.rate_limited
    assert caught.value.retry_after == 30.0
    assert not caught.value.outcome_unknown
    assert len(slack.called("chat.postMessage")) == 1
    assert not slack.messages


@pytest.mark.parametrize(
    ("word", "outcome_unknown"),
    [("internal_error", True), ("fatal_error", True), ("service_unavailable", False), ("request_timeout", False)],
)
async def test_slacks_transient_errors(
    slack: FakeSlack, sender: SlackSender, instance: Instance, word: str, outcome_unknown: bool
) -> None:
    slack.fail("chat.postMessage", Fault(body={"ok": False, "error": word}))

    with pytest.raises(ChannelTransientError) as caught:
        await sender.send_text(instance, SendTarget(chat_id=CHANNEL), "x")

    assert word in caught.value.message
    assert caught.value.outcome_unknown is outcome_unknown
    assert not caught.value.rate_limited


@pytest.mark.parametrize(
    ("word", "reason", "status"),
    [
        ("invalid_auth", REASON_UNAUTHORIZED, 401),
        ("token_revoked", REASON_UNAUTHORIZED, 401),
        ("missing_scope", REASON_UNAUTHORIZED, 401),
        ("channel_not_found", REASON_NOT_FOUND, 404),
        ("not_in_channel", REASON_REJECTED, 400),
        ("is_archived", REASON_REJECTED, 400),
        ("msg_too_long", REASON_REJECTED, 400),
    ],
)
async def test_slacks_refusals(
    slack: FakeSlack, sender: SlackSender, instance: Instance, word: str, reason: str, status: int
) -> None:
    slack.fail("chat.postMessage", Fault(body={"ok": False, "error": word}))

    with pytest.raises(ChannelRejectedError) as caught:
        await sender.send_text(instance, SendTarget(chat_id=CHANNEL), "x")

    assert word in caught.value.message
    assert (caught.value.reason, caught.value.status) == (reason, status)


async def test_an_unknown_channel_is_refused_by_the_fake_itself(sender: SlackSender, instance: Instance) -> None:
    with pytest.raises(ChannelRejectedError) as caught:
        await sender.send_text(instance, SendTarget(chat_id="C0NOPE"), "x")
    assert caught.value.reason == REASON_NOT_FOUND


async def test_slacks_argument_details_are_kept(slack: FakeSlack, sender: SlackSender, instance: Instance) -> None:
    body = {"ok": False, "error": "invalid_arguments", "response_metadata": {"messages": ["[ERROR] bad thread_ts"]}}
    slack.fail("chat.postMessage", Fault(body=body))

    with pytest.raises(ChannelRejectedError) as caught:
        await sender.send_text(instance, SendTarget(chat_id=CHANNEL), "x")

    assert "invalid_arguments" in caught.value.message
    assert "bad thread_ts" in caught.value.message


async def test_a_proxy_timeout_leaves_the_outcome_unknown(
    slack: FakeSlack, sender: SlackSender, instance: Instance
) -> None:
    slack.fail("chat.postMessage", Fault(502, raw="<html>bad gateway</html>"))

    with pytest.raises(ChannelTransientError) as caught:
        await sender.send_text(instance, SendTarget(chat_id=CHANNEL), "x")

    assert caught.value.outcome_unknown


async def test_a_slow_post_times_out_with_the_outcome_unknown(slack: FakeSlack, instance: Instance) -> None:
    slack.fail("chat.postMessage", Fault(body={"ok": True, "ts": "1.0"}, delay=2.0))
    quick = SlackSender(api_url=slack.api_url, send_timeout_seconds=0.3)
    try:
        with pytest.raises(ChannelTransientError) as caught:
            await quick.send_text(instance, SendTarget(chat_id=CHANNEL), "x")
    finally:
        await quick.aclose()

    assert caught.value.outcome_unknown


async def test_a_slow_dm_opening_is_not_an_unknown_outcome(slack: FakeSlack, instance: Instance) -> None:
    slack.fail("conversations.open", Fault(body={"ok": True}, delay=2.0))
    quick = SlackSender(api_url=slack.api_url, send_timeout_seconds=0.3)
    try:
        with pytest.raises(ChannelTransientError) as caught:
            await quick.send_text(instance, SendTarget(chat_id="U0ALICE"), "x")
    finally:
        await quick.aclose()

    assert not caught.value.outcome_unknown
    assert not slack.called("chat.postMessage")


async def test_an_unreachable_slack_is_transient_and_nothing_was_sent(instance: Instance) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    closed = SlackSender(api_url=f"http://127.0.0.1:{port}/api/")
    try:
        with pytest.raises(ChannelTransientError) as caught:
            await closed.send_text(instance, SendTarget(chat_id=CHANNEL), "x")
    finally:
        await closed.aclose()

    assert not caught.value.outcome_unknown


async def test_an_instance_without_a_slack_token_is_misconfigured(sender: SlackSender) -> None:
    for broken in (
        Instance(name="empty", config=SlackConfig(bot_token=" ")),
        Instance(name="discord", config=DiscordConfig(bot_token="x")),
    ):
        with pytest.raises(ChannelRejectedError) as caught:
            await sender.send_text(broken, SendTarget(chat_id=CHANNEL), "x")
        assert caught.value.reason == REASON_MISCONFIGURED


# ---------------------------------------------------------------------- account, status, channels


async def test_check_account_reports_the_bot_and_its_workspace(sender: SlackSender, instance: Instance) -> None:
    assert await sender.check_account(instance) == Account(
        id="U0OMNIBOT", name="omni", workspace_id="T0ACME", workspace_name="Acme Corp"
    )


async def test_check_account_refuses_an_invalid_token(slack: FakeSlack, sender: SlackSender) -> None:
    stranger = Instance(name="x", config=SlackConfig(bot_token="xoxb-wrong"))

    with pytest.raises(ChannelRejectedError) as caught:
        await sender.check_account(stranger)

    assert caught.value.reason == REASON_UNAUTHORIZED
    assert "invalid_auth" in caught.value.message
    assert [c.method for c in slack.calls] == ["auth.test"]


async def test_the_servicer_returns_the_workspace_of_the_account(sender: SlackSender, instance: Instance) -> None:
    class Core:
        async def check_account(self, instance: Instance) -> Account:
            return await sender.check_account(instance)

    servicer = ChannelsServicer(cast(ChannelsCore, Core()))
    request = channels_service_pb2.CheckAccountRequest(instance=instance_to_proto(instance, with_secrets=True))

    response = await servicer.CheckAccount(request, cast(Any, None))

    assert (response.account_id, response.account_name) == ("U0OMNIBOT", "omni")
    assert (response.workspace_id, response.workspace_name) == ("T0ACME", "Acme Corp")


async def test_connection_status(slack: FakeSlack, sender: SlackSender, instance: Instance) -> None:
    status = await sender.connection_status(instance, include_qr_code=True)
    assert status.state is ConnectionState.CONNECTED
    assert (status.account_id, status.account_name) == ("U0OMNIBOT", "omni")
    assert status.workspaces == (("T0ACME", "Acme Corp"),)
    assert not status.qr_code

    revoked = Instance(name="x", config=SlackConfig(bot_token="xoxb-revoked"))
    failed = await sender.connection_status(revoked, include_qr_code=False)
    assert failed.state is ConnectionState.ERROR
    assert failed.raw_state == "invalid_auth"
    assert "invalid_auth" in failed.detail

    unconfigured = await sender.connection_status(Instance(name="y", config=SlackConfig()), include_qr_code=False)
    assert unconfigured.state is ConnectionState.ERROR
    assert "no Slack bot token" in unconfigured.detail


async def test_list_channels_follows_the_cursor(slack: FakeSlack, sender: SlackSender, instance: Instance) -> None:
    channels = await sender.list_channels(instance)

    assert channels == [
        ChatChannel(id=CHANNEL, name="general", kind="text", workspace_id="T0ACME", workspace_name="Acme Corp"),
        ChatChannel(id="C0RANDOM", name="random", kind="text", workspace_id="T0ACME", workspace_name="Acme Corp"),
        ChatChannel(id="G0SECRET", name="secret", kind="text", workspace_id="T0ACME", workspace_name="Acme Corp"),
    ]
    cursors = [c.params.get("cursor") for c in slack.called("conversations.list")]
    assert cursors == [None, "2"]


async def test_presence_and_webhooks_are_not_slack_api_calls(
    slack: FakeSlack, sender: SlackSender, instance: Instance
) -> None:
    await sender.send_presence(instance, CHANNEL, "composing", 3000)
    assert await sender.register_webhook(instance, "https://hub.example/api/v1/webhook/slack/acme-slack") is False
    assert slack.calls == []


# ---------------------------------------------------------------------- reconciliation


async def test_find_sent_looks_in_the_thread(slack: FakeSlack, sender: SlackSender, instance: Instance) -> None:
    parent = slack.post(FakeBot(user_id="U0ALICE", user="alice", bot_id=""), CHANNEL, "question")
    since = float(parent["ts"])
    slack.post(slack.bots[OTHER_TOKEN], CHANNEL, "a <b> & c", thread_ts=parent["ts"])  # the same text, another bot
    ts = await sender.send_text(instance, SendTarget(chat_id=CHANNEL, thread_id=parent["ts"]), "a <b> & c")
    part = OutboundPart(text="a <b> & c", thread_id=parent["ts"])

    assert await sender.find_sent(instance, CHANNEL, part, since, set()) == ts
    assert await sender.find_sent(instance, CHANNEL, part, since, {ts}) is None
    assert (
        await sender.find_sent(instance, CHANNEL, OutboundPart(text="other", thread_id=parent["ts"]), since, set())
        is None
    )
    assert slack.called("conversations.replies")
    assert not slack.called("conversations.history")


async def test_find_sent_reads_the_history_of_a_top_level_part(
    slack: FakeSlack, sender: SlackSender, instance: Instance
) -> None:
    old = await sender.send_text(instance, SendTarget(chat_id=CHANNEL), "hello")
    since = float(old) + 0.5
    first = await sender.send_text(instance, SendTarget(chat_id=CHANNEL), "hello")
    second = await sender.send_text(instance, SendTarget(chat_id=CHANNEL), "hello")

    part = OutboundPart(text="hello")
    assert await sender.find_sent(instance, CHANNEL, part, since, set()) == first
    assert await sender.find_sent(instance, CHANNEL, part, since, {first}) == second
    assert slack.called("conversations.history")[0].params["oldest"] == f"{since:.6f}"


async def test_find_sent_in_a_dm_and_in_a_vanished_thread(
    slack: FakeSlack, sender: SlackSender, instance: Instance
) -> None:
    ts = await sender.send_text(instance, SendTarget(chat_id="U0ALICE"), "hi")
    part = OutboundPart(text="hi", thread_id="1.000000")  # a thread Slack no longer knows: the history is read

    assert await sender.find_sent(instance, "U0ALICE", part, 0.0, set()) == ts
    assert slack.called("conversations.history")[0].params["channel"] == "D0ALICE"


async def test_find_sent_failure_is_classified(slack: FakeSlack, sender: SlackSender, instance: Instance) -> None:
    slack.fail("conversations.history", Fault(body={"ok": False, "error": "missing_scope"}))
    with pytest.raises(ChannelRejectedError) as caught:
        await sender.find_sent(instance, CHANNEL, OutboundPart(text="x"), 0.0, set())
    assert caught.value.reason == REASON_UNAUTHORIZED


# ---------------------------------------------------------------------- media


async def test_a_file_is_uploaded_and_shared_in_the_thread(
    slack: FakeSlack, sender: SlackSender, instance: Instance
) -> None:
    media = Media(type="image", mime_type="image/png", base64=base64.b64encode(PNG).decode())
    target = SendTarget(chat_id=CHANNEL, thread_id="1699999999.000300")

    file_id = await sender.send_media(instance, target, media, "look")

    [ticket] = slack.called("files.getUploadURLExternal")
    assert (ticket.params["filename"], ticket.params["length"]) == ("image.png", str(len(PNG)))
    assert slack.uploads[file_id] == PNG
    [complete] = slack.called("files.completeUploadExternal")
    assert complete.params["channel_id"] == CHANNEL
    assert complete.params["thread_ts"] == "1699999999.000300"
    assert complete.params["initial_comment"] == "look"
    assert json.loads(complete.params["files"]) == [{"id": file_id, "title": "image.png"}]
    [message] = slack.messages
    assert message["thread_ts"] == "1699999999.000300"

    part = OutboundPart(text="look", media=media, thread_id="1699999999.000300")
    assert await sender.find_sent(instance, CHANNEL, part, 0.0, {file_id}) is None  # recorded by its file id
    assert await sender.find_sent(instance, CHANNEL, part, 0.0, set()) == message["ts"]


async def test_the_share_ts_is_returned_when_slack_reports_it(
    slack: FakeSlack, sender: SlackSender, instance: Instance
) -> None:
    slack.report_shares = True
    media = Media(base64=base64.b64encode(b"%PDF-1.4").decode(), filename="dir/report.pdf")

    ts = await sender.send_media(instance, SendTarget(chat_id="U0ALICE"), media, "")

    [message] = slack.messages
    assert ts == message["ts"]
    assert message["channel"] == "D0ALICE"
    complete = slack.called("files.completeUploadExternal")[0]
    assert "initial_comment" not in complete.params
    assert "thread_ts" not in complete.params
    assert slack.called("files.getUploadURLExternal")[0].params["filename"] == "report.pdf"


async def test_media_by_url_is_downloaded_capped_and_never_redirected(slack: FakeSlack, instance: Instance) -> None:
    async def serve(request: web.Request) -> web.StreamResponse:
        if request.path == "/cat.png":
            return web.Response(body=PNG, content_type="image/png")
        if request.path == "/big":
            return web.Response(body=b"x" * 4096, content_type="application/octet-stream")
        if request.path == "/moved":
            raise web.HTTPFound("http://169.254.169.254/")
        return web.Response(status=503)

    app = web.Application()
    app.router.add_get("/{tail:.*}", serve)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host = f"http://127.0.0.1:{runner.addresses[0][1]}"
    capped = SlackSender(api_url=slack.api_url, media_max_bytes=1024)
    try:
        file_id = await capped.send_media(instance, SendTarget(chat_id=CHANNEL), Media(url=host + "/cat.png"), "")
        assert slack.uploads[file_id] == PNG
        assert slack.called("files.getUploadURLExternal")[0].params["filename"] == "cat.png"

        with pytest.raises(ChannelRejectedError) as too_big:
            await capped.send_media(instance, SendTarget(chat_id=CHANNEL), Media(url=host + "/big"), "")
        assert too_big.value.status == 413
        with pytest.raises(ChannelRejectedError) as moved:
            await capped.send_media(instance, SendTarget(chat_id=CHANNEL), Media(url=host + "/moved"), "")
        assert "redirects are not followed" in moved.value.message
        with pytest.raises(ChannelTransientError) as down:
            await capped.send_media(instance, SendTarget(chat_id=CHANNEL), Media(url=host + "/down"), "")
        assert not down.value.outcome_unknown
        with pytest.raises(ChannelRejectedError):
            await capped.send_media(instance, SendTarget(chat_id=CHANNEL), Media(base64="!!not base64!!"), "")
    finally:
        await capped.aclose()
        await runner.cleanup()

    assert len(slack.called("files.completeUploadExternal")) == 1


async def test_a_failed_share_is_an_unknown_outcome_but_a_failed_upload_is_not(
    slack: FakeSlack, sender: SlackSender, instance: Instance
) -> None:
    media = Media(base64=base64.b64encode(PNG).decode(), mime_type="image/png")
    slack.fail("files.getUploadURLExternal", Fault(body={"ok": False, "error": "internal_error"}))
    with pytest.raises(ChannelTransientError) as before:
        await sender.send_media(instance, SendTarget(chat_id=CHANNEL), media, "")
    assert not before.value.outcome_unknown

    slack.fail("files.completeUploadExternal", Fault(body={"ok": False, "error": "internal_error"}))
    with pytest.raises(ChannelTransientError) as during:
        await sender.send_media(instance, SendTarget(chat_id=CHANNEL), media, "")
    assert during.value.outcome_unknown


async def test_a_session_given_is_shared_and_left_open(slack: FakeSlack, instance: Instance) -> None:
    async with aiohttp.ClientSession() as session:
        shared = SlackSender(api_url=slack.api_url.rstrip("/"), session=session)
        await shared.send_text(instance, SendTarget(chat_id=CHANNEL), "x")
        assert shared._clients[TOKEN].web.session is session
        await shared.aclose()
        assert not session.closed


async def test_a_429_longer_than_the_time_left_is_handed_back_not_slept_into_a_timeout(
    slack: FakeSlack, instance: Instance
) -> None:
    slack.fail("chat.postMessage", Fault(429, {"ok": False, "error": "ratelimited"}, {"Retry-After": "2"}))
    tight = SlackSender(api_url=slack.api_url, send_timeout_seconds=2.5, max_ratelimit_wait_seconds=5.0)
    started = time.monotonic()
    try:
        with pytest.raises(ChannelTransientError) as caught:
            await tight.send_text(instance, SendTarget(chat_id=CHANNEL), "x")
    finally:
        await tight.aclose()

    assert time.monotonic() - started < 1.0
    assert caught.value.rate_limited
    assert caught.value.retry_after == 2.0
    assert not caught.value.outcome_unknown


# ---------------------------------------------------------------------- against the Slack simulator


@dataclass
class SimWorld:
    sim: SlackSimulator
    bot: SimBot
    instance: Instance
    general: str
    alice: str


@pytest.fixture
async def world() -> AsyncIterator[SimWorld]:
    async with SlackSimulator() as sim:
        team = sim.add_team("Acme")
        alice = sim.add_user(team.id, "alice")
        bot = sim.add_bot(team.id, "omni-bot")
        general = sim.add_channel(team.id, "general", is_general=True)
        sim.add_channel(team.id, "random")
        sim.add_channel(team.id, "secret", private=True)
        instance = Instance(name="acme-slack", config=SlackConfig(bot_token=bot.token))
        yield SimWorld(sim=sim, bot=bot, instance=instance, general=general.id, alice=alice.id)


async def test_simulator_round_trip(world: SimWorld) -> None:
    """Thread reply, DM, a 429 slept through, reconciliation, upload, account and channels on the simulator."""
    sim, instance = world.sim, world.instance
    sender = SlackSender(api_url=sim.api_url, send_timeout_seconds=5.0, max_ratelimit_wait_seconds=2.0)
    try:
        question, _ = await sim.post_user_message(world.general, world.alice, "hi bot")
        since = float(question["ts"]) - 1
        sim.fail_next("chat.postMessage", retry_after=1)
        ts = await sender.send_text(instance, SendTarget(chat_id=world.general, thread_id=question["ts"]), "a & b")
        [reply] = sim.thread(world.general, question["ts"])
        assert reply["ts"] == ts
        assert [method for method, _ in sim.calls].count("chat.postMessage") == 2  # the 429, then the post

        part = OutboundPart(text="a & b", thread_id=question["ts"])
        assert await sender.find_sent(instance, world.general, part, since, set()) == ts
        assert await sender.find_sent(instance, world.general, part, since, {ts}) is None

        await sender.send_text(instance, SendTarget(chat_id=world.alice), "private")
        dm = sim.open_dm(world.bot, world.alice)
        assert [m["text"] for m in sim.messages(dm.id)] == ["private"]

        media = Media(base64=base64.b64encode(PNG).decode(), mime_type="image/png")
        sent = await sender.send_media(
            instance, SendTarget(chat_id=world.general, thread_id=question["ts"]), media, "pic"
        )
        upload = sim.posts[-1]
        assert upload.files
        assert sent in (upload.ts, upload.files[0]["id"])
        assert sim.file_bytes(upload.files[0]["id"]) == PNG
        assert upload.thread_ts == question["ts"]

        account = await sender.check_account(instance)
        assert (account.id, account.workspace_id) == (world.bot.user_id, world.bot.team_id)
        names = {c.name for c in await sender.list_channels(instance)}
        assert {"general", "random", "secret"} <= names
    finally:
        await sender.aclose()
