"""The Slack simulator's Web API, driven by slack_sdk's real `AsyncWebClient`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient

from simulators.slack import Bot, SlackSimulator, Team, User


@pytest.fixture
async def sim() -> AsyncIterator[SlackSimulator]:
    async with SlackSimulator(echo_bot_posts=False) as simulator:
        yield simulator


@pytest.fixture
def team(sim: SlackSimulator) -> Team:
    return sim.add_team("Acme")


@pytest.fixture
def bot(sim: SlackSimulator, team: Team) -> Bot:
    return sim.add_bot(team.id, "omni")


@pytest.fixture
def alice(sim: SlackSimulator, team: Team) -> User:
    return sim.add_user(team.id, "alice")


def client(sim: SlackSimulator, token: str) -> AsyncWebClient:
    return AsyncWebClient(token=token, base_url=sim.api_url)


async def test_auth_test_identifies_the_bot_and_rejects_bad_tokens(sim: SlackSimulator, bot: Bot, team: Team) -> None:
    me = await client(sim, bot.token).auth_test()
    assert (me["user_id"], me["bot_id"], me["team_id"], me["team"]) == (bot.user_id, bot.bot_id, team.id, "Acme")
    with pytest.raises(SlackApiError) as bad:
        await client(sim, "xoxb-nope").auth_test()
    assert bad.value.response["error"] == "invalid_auth"
    with pytest.raises(SlackApiError) as missing:
        await AsyncWebClient(base_url=sim.api_url).auth_test()
    assert missing.value.response["error"] == "not_authed"


async def test_post_in_a_thread_and_page_the_replies(sim: SlackSimulator, team: Team, bot: Bot, alice: User) -> None:
    channel = sim.add_channel(team.id, "support")
    parent, deliveries = await sim.post_user_message(channel.id, alice.id, "help please")
    assert deliveries[0].transport == "none"
    web = client(sim, bot.token)
    for n in range(3):
        posted = await web.chat_postMessage(channel=channel.id, text=f"reply {n}", thread_ts=parent["ts"])
        assert posted["message"]["bot_id"] == bot.bot_id
        assert posted["message"]["thread_ts"] == parent["ts"]
    assert [p.text for p in sim.posts] == ["reply 0", "reply 1", "reply 2"]
    assert all(p.thread_ts == parent["ts"] for p in sim.posts)
    first = await web.conversations_replies(channel=channel.id, ts=parent["ts"], limit=2)
    assert [m["text"] for m in first["messages"]] == ["help please", "reply 0"]
    assert first["has_more"] is True
    second = await web.conversations_replies(
        channel=channel.id, ts=parent["ts"], limit=2, cursor=first["response_metadata"]["next_cursor"]
    )
    assert [m["text"] for m in second["messages"]] == ["reply 1", "reply 2"]
    assert second["response_metadata"]["next_cursor"] == ""
    assert sim.messages(channel.id)[0]["reply_count"] == 3
    history = await web.conversations_history(channel=channel.id)
    assert [m["text"] for m in history["messages"]] == ["help please"]
    timestamps = [m["ts"] for m in sim.messages(channel.id)]
    assert timestamps == sorted(timestamps, key=float)
    assert len(set(timestamps)) == 4


@pytest.mark.filterwarnings("ignore:The top-level `text` argument is missing:UserWarning")
async def test_post_errors_answer_ok_false(sim: SlackSimulator, team: Team, bot: Bot) -> None:
    channel = sim.add_channel(team.id, "general")
    web = client(sim, bot.token)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"channel": "C000"}, "channel_not_found"),
        ({"channel": channel.id, "text": ""}, "no_text"),
    ]
    cases.append(({"channel": channel.id, "text": "x" * 40_001}, "msg_too_long"))
    for kwargs, error in cases:
        with pytest.raises(SlackApiError) as failed:
            await web.chat_postMessage(**kwargs)
        assert failed.value.response.status_code == 200
        assert failed.value.response["error"] == error
    assert sim.posts == []


async def test_dm_by_user_id_and_conversations_open(sim: SlackSimulator, bot: Bot, alice: User) -> None:
    web = client(sim, bot.token)
    opened = await web.conversations_open(users=alice.id)
    dm = opened["channel"]["id"]
    assert dm.startswith("D")
    assert (await web.conversations_open(users=alice.id))["already_open"] is True
    posted = await web.chat_postMessage(channel=alice.id, text="hi alice")
    assert posted["channel"] == dm
    info = await web.conversations_info(channel=dm)
    assert info["channel"]["is_im"] is True
    assert info["channel"]["user"] == alice.id


async def test_lists_page_with_cursors(sim: SlackSimulator, team: Team, bot: Bot) -> None:
    for n in range(5):
        sim.add_channel(team.id, f"c{n}")
        sim.add_user(team.id, f"u{n}")
    sim.add_channel(team.id, "secret", private=True, members=[])
    web = client(sim, bot.token)
    names: list[str] = []
    cursor = None
    while True:
        page = await web.conversations_list(limit=2, cursor=cursor)
        names += [c["name"] for c in page["channels"]]
        cursor = page["response_metadata"]["next_cursor"]
        if not cursor:
            break
    assert names == ["c0", "c1", "c2", "c3", "c4"]
    users = await web.users_list(limit=4)
    rest = await web.users_list(cursor=users["response_metadata"]["next_cursor"])
    assert len(users["members"]) + len(rest["members"]) == 6
    info = await web.users_info(user=bot.user_id)
    assert info["user"]["is_bot"] is True


async def test_files_upload_v2_shares_a_file_in_a_thread(
    sim: SlackSimulator, team: Team, bot: Bot, alice: User
) -> None:
    channel = sim.add_channel(team.id, "files")
    parent, _ = await sim.post_user_message(channel.id, alice.id, "send me the report")
    result = await client(sim, bot.token).files_upload_v2(
        channel=channel.id, content=b"a,b\n1,2\n", filename="report.csv", thread_ts=parent["ts"], initial_comment="here"
    )
    file_id = result["file"]["id"]
    assert sim.file_bytes(file_id) == b"a,b\n1,2\n"
    (post,) = sim.posts
    assert (post.method, post.text, post.thread_ts, post.files[0]["name"]) == (
        "files.completeUploadExternal",
        "here",
        parent["ts"],
        "report.csv",
    )
    assert sim.thread(channel.id, parent["ts"])[0]["files"][0]["id"] == file_id


async def test_429_is_retried_by_the_rate_limit_handler(sim: SlackSimulator, team: Team, bot: Bot) -> None:
    channel = sim.add_channel(team.id, "general")
    sim.fail_next("chat.postMessage", status=429, retry_after=0)
    web = client(sim, bot.token)
    web.retry_handlers.append(AsyncRateLimitErrorRetryHandler(max_retry_count=1))
    posted = await web.chat_postMessage(channel=channel.id, text="eventually")
    assert posted["ok"] is True
    assert [m for m, _ in sim.calls].count("chat.postMessage") == 2
    sim.fail_next("chat.postMessage", error="internal_error")
    with pytest.raises(SlackApiError) as failed:
        await client(sim, bot.token).chat_postMessage(channel=channel.id, text="no")
    assert failed.value.response["error"] == "internal_error"
    sim.fail_next("auth.test", retry_after=2)
    with pytest.raises(SlackApiError) as limited:
        await client(sim, bot.token).auth_test()
    assert limited.value.response.status_code == 429
    assert limited.value.response.headers["Retry-After"] == "2"
