"""The Discord simulator's REST API and `/__sim` control endpoints, through plain HTTP."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from simulators.discord import DiscordSimulator


@pytest.fixture
async def sim() -> AsyncIterator[DiscordSimulator]:
    simulator = DiscordSimulator(rate_limit=3, rate_limit_window=60.0)
    await simulator.start()
    try:
        yield simulator
    finally:
        await simulator.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def api(
    http: aiohttp.ClientSession,
    sim: DiscordSimulator,
    method: str,
    path: str,
    token: str | None,
    body: dict[str, Any] | None = None,
) -> tuple[int, Any, aiohttp.ClientResponse]:
    headers = {"Authorization": f"Bot {token}"} if token is not None else {}
    async with http.request(method, sim.api_url + path, json=body, headers=headers) as response:
        payload = await response.json(content_type=None) if response.status != 204 else None
        return response.status, payload, response


async def control(http: aiohttp.ClientSession, sim: DiscordSimulator, method: str, path: str, body: Any = None) -> Any:
    async with http.request(method, f"{sim.url}/__sim/{path}", json=body) as response:
        assert response.headers["Content-Type"] == "application/json"
        return response.status, await response.json()


async def test_identity_routes_answer_exact_application_json(
    sim: DiscordSimulator, http: aiohttp.ClientSession
) -> None:
    bot = sim.add_bot("omni-bot")
    status, me, response = await api(http, sim, "GET", "/users/@me", bot.token)
    assert status == 200
    assert response.headers["Content-Type"] == "application/json"
    assert me["id"] == bot.id
    assert me["bot"] is True
    assert me["username"] == "omni-bot"
    status, app, _ = await api(http, sim, "GET", "/oauth2/applications/@me", bot.token)
    assert status == 200
    assert app["id"] == bot.id
    assert {
        "name",
        "icon",
        "description",
        "bot_public",
        "bot_require_code_grant",
        "verify_key",
        "flags",
        "owner",
    } <= set(app)
    status, gateway, _ = await api(http, sim, "GET", "/gateway/bot", bot.token)
    assert status == 200
    assert gateway["url"] == sim.gateway_url
    assert gateway["shards"] == 1
    assert gateway["session_start_limit"]["max_concurrency"] == 1
    status, gateway, _ = await api(http, sim, "GET", "/gateway", None)
    assert (status, gateway) == (200, {"url": sim.gateway_url})


@pytest.mark.parametrize("header", [None, "Bot nope", "nope"])
async def test_bad_credentials_are_401(sim: DiscordSimulator, http: aiohttp.ClientSession, header: str | None) -> None:
    sim.add_bot("omni-bot")
    headers = {"Authorization": header} if header is not None else {}
    async with http.get(sim.api_url + "/users/@me", headers=headers) as response:
        assert response.status == 401
        assert response.headers["Content-Type"] == "application/json"
        assert await response.json() == {"message": "401: Unauthorized", "code": 0}


async def test_revoked_token_is_401(sim: DiscordSimulator, http: aiohttp.ClientSession) -> None:
    bot = sim.add_bot("omni-bot")
    sim.revoke_token(bot.token)
    status, body, _ = await api(http, sim, "GET", "/users/@me", bot.token)
    assert (status, body) == (401, {"message": "401: Unauthorized", "code": 0})


async def test_channel_access_errors(sim: DiscordSimulator, http: aiohttp.ClientSession) -> None:
    bot, other = sim.add_bot("a"), sim.add_bot("b")
    theirs = sim.add_guild("theirs", bots=[other.id])
    channel = theirs.channel_ids["general"]
    status, body, _ = await api(http, sim, "POST", "/channels/123/messages", bot.token, {"content": "x"})
    assert (status, body) == (404, {"message": "Unknown Channel", "code": 10003})
    status, body, _ = await api(http, sim, "POST", f"/channels/{channel}/messages", bot.token, {"content": "x"})
    assert (status, body) == (403, {"message": "Missing Access", "code": 50001})
    status, body, _ = await api(http, sim, "GET", f"/guilds/{theirs.id}", bot.token)
    assert (status, body["code"]) == (403, 50001)
    status, body, _ = await api(http, sim, "GET", "/no/such/route", bot.token)
    assert (status, body) == (404, {"message": "404: Not Found", "code": 0})


async def test_message_create_validation(sim: DiscordSimulator, http: aiohttp.ClientSession) -> None:
    bot = sim.add_bot("omni-bot")
    channel = sim.add_guild("acme", bots=[bot.id]).channel_ids["general"]
    path = f"/channels/{channel}/messages"
    status, body, _ = await api(http, sim, "POST", path, bot.token, {"content": "x" * 2001})
    assert status == 400
    assert body == {
        "code": 50035,
        "message": "Invalid Form Body",
        "errors": {
            "content": {"_errors": [{"code": "BASE_TYPE_MAX_LENGTH", "message": "Must be 2000 or fewer in length."}]}
        },
    }
    status, body, _ = await api(http, sim, "POST", path, bot.token, {"content": ""})
    assert (status, body["code"]) == (400, 50006)
    reference = {"message_reference": {"message_id": "42"}, "content": "re"}
    status, body, _ = await api(http, sim, "POST", path, bot.token, reference)
    assert (status, body["code"]) == (400, 50035)
    assert "message_reference" in body["errors"]
    assert sim.sent == []


async def test_message_create_rate_limit_headers_and_429(sim: DiscordSimulator, http: aiohttp.ClientSession) -> None:
    bot = sim.add_bot("omni-bot")
    channel = sim.add_guild("acme", bots=[bot.id]).channel_ids["general"]
    path = f"/channels/{channel}/messages"
    remaining = []
    for text in ("one", "two", "three"):
        status, body, response = await api(http, sim, "POST", path, bot.token, {"content": text})
        assert status == 200
        assert body["content"] == text
        assert body["author"]["id"] == bot.id
        assert response.headers["X-RateLimit-Limit"] == "3"
        assert response.headers["X-RateLimit-Bucket"]
        assert 0 < float(response.headers["X-RateLimit-Reset-After"]) <= 60
        assert float(response.headers["X-RateLimit-Reset"]) > time.time()
        remaining.append(response.headers["X-RateLimit-Remaining"])
    assert remaining == ["2", "1", "0"]
    status, body, response = await api(http, sim, "POST", path, bot.token, {"content": "four"})
    assert status == 429
    assert response.headers["Via"] == "1.1 google"
    assert body["message"] == "You are being rate limited."
    assert body["global"] is False
    assert body["retry_after"] > 0
    assert [s.content for s in sim.sent] == ["one", "two", "three"]


async def test_injected_429_and_5xx(sim: DiscordSimulator, http: aiohttp.ClientSession) -> None:
    bot = sim.add_bot("omni-bot")
    channel = sim.add_guild("acme", bots=[bot.id]).channel_ids["general"]
    path = f"/channels/{channel}/messages"
    sim.rate_limit_next(1, retry_after=0.5, is_global=True)
    sim.fail_next(1, status=502)
    status, body, response = await api(http, sim, "POST", path, bot.token, {"content": "x"})
    assert (status, body) == (429, {"message": "You are being rate limited.", "retry_after": 0.5, "global": True})
    assert response.headers["Via"] == "1.1 google"
    assert response.headers["X-RateLimit-Global"] == "true"
    assert response.headers["Content-Type"] == "application/json"
    status, body, _ = await api(http, sim, "POST", path, bot.token, {"content": "x"})
    assert (status, body) == (502, {"message": "502: Bad Gateway", "code": 0})
    status, _, _ = await api(http, sim, "POST", path, bot.token, {"content": "x"})
    assert status == 200


async def test_history_paging_is_newest_first(sim: DiscordSimulator, http: aiohttp.ClientSession) -> None:
    bot = sim.add_bot("omni-bot")
    alice = sim.add_user("alice")
    channel = sim.add_guild("acme", bots=[bot.id]).channel_ids["general"]
    ids = [(await sim.post_message(channel, alice.id, str(i)))["id"] for i in range(6)]
    path = f"/channels/{channel}/messages"

    async def contents(query: str) -> list[str]:
        status, body, _ = await api(http, sim, "GET", path + query, bot.token)
        assert status == 200
        return [m["content"] for m in body]

    assert await contents("") == ["5", "4", "3", "2", "1", "0"]
    assert await contents("?limit=2") == ["5", "4"]
    assert await contents(f"?before={ids[3]}&limit=2") == ["2", "1"]
    assert await contents(f"?after={ids[3]}") == ["5", "4"]
    assert await contents(f"?around={ids[2]}&limit=3") == ["3", "2", "1"]
    status, body, _ = await api(http, sim, "GET", path + "?limit=101", bot.token)
    assert (status, body["code"]) == (400, 50035)
    status, body, _ = await api(http, sim, "GET", f"{path}/{ids[0]}", bot.token)
    assert status == 200
    assert body["content"] == "0"


async def test_dm_channel_and_lookups(sim: DiscordSimulator, http: aiohttp.ClientSession) -> None:
    bot = sim.add_bot("omni-bot")
    alice = sim.add_user("alice")
    guild = sim.add_guild("acme", bots=[bot.id], channels=("general", "random"))
    status, dm, _ = await api(http, sim, "POST", "/users/@me/channels", bot.token, {"recipient_id": int(alice.id)})
    assert status == 200
    assert dm["type"] == 1
    assert dm["recipients"][0]["id"] == alice.id
    status, again, _ = await api(http, sim, "POST", "/users/@me/channels", bot.token, {"recipient_id": alice.id})
    assert again["id"] == dm["id"]
    status, body, _ = await api(http, sim, "POST", f"/channels/{dm['id']}/messages", bot.token, {"content": "hi"})
    assert status == 200
    assert "guild_id" not in body
    status, _, _ = await api(http, sim, "POST", f"/channels/{dm['id']}/typing", bot.token)
    assert status == 204
    assert sim.typing == [(bot.id, dm["id"])]
    status, guilds, _ = await api(http, sim, "GET", "/users/@me/guilds", bot.token)
    assert [g["id"] for g in guilds] == [guild.id]
    status, channels, _ = await api(http, sim, "GET", f"/guilds/{guild.id}/channels", bot.token)
    assert [c["name"] for c in channels] == ["general", "random"]
    status, channel, _ = await api(http, sim, "GET", f"/channels/{guild.channel_ids['random']}", bot.token)
    assert (channel["type"], channel["guild_id"]) == (0, guild.id)
    status, user, _ = await api(http, sim, "GET", f"/users/{alice.id}", bot.token)
    assert user["username"] == "alice"


async def test_multipart_upload(sim: DiscordSimulator, http: aiohttp.ClientSession) -> None:
    bot = sim.add_bot("omni-bot")
    channel = sim.add_guild("acme", bots=[bot.id]).channel_ids["general"]
    form = aiohttp.FormData(quote_fields=False)
    form.add_field("payload_json", '{"content": "see file", "attachments": [{"id": 0, "filename": "a.png"}]}')
    form.add_field("files[0]", b"\x89PNG data", filename="a.png", content_type="application/octet-stream")
    async with http.post(
        f"{sim.api_url}/channels/{channel}/messages", data=form, headers={"Authorization": f"Bot {bot.token}"}
    ) as response:
        assert response.status == 200
        body = await response.json()
    (attachment,) = body["attachments"]
    assert (attachment["filename"], attachment["size"], attachment["content_type"]) == ("a.png", 9, "image/png")
    async with http.get(attachment["url"]) as response:
        assert await response.read() == b"\x89PNG data"
    assert sim.sent[0].attachments == [{"filename": "a.png", "size": 9, "content_type": "image/png"}]


async def test_control_endpoints_stage_and_record(sim: DiscordSimulator, http: aiohttp.ClientSession) -> None:
    status, bot = await control(http, sim, "POST", "bots", {"name": "omni-bot", "token": "tok-1"})
    assert status == 201
    assert bot["token"] == "tok-1"
    _, alice = await control(http, sim, "POST", "users", {"name": "alice"})
    status, guild = await control(http, sim, "POST", "guilds", {"name": "acme", "bots": [bot["id"]]})
    channel = guild["channel_ids"]["general"]
    status, thread = await control(
        http, sim, "POST", "threads", {"guild_id": guild["id"], "parent_channel_id": channel, "name": "help"}
    )
    assert status == 201
    assert thread["id"] in sim.state.channels
    body = {"channel_id": channel, "author_id": alice["id"], "content": "hi", "mentions": [bot["id"]]}
    body["attachments"] = [{"filename": "n.txt", "content": "text"}]
    status, message = await control(http, sim, "POST", "messages", body)
    assert status == 201
    assert message["mentions"][0]["id"] == bot["id"]
    assert message["attachments"][0]["size"] == 4
    status, dm = await control(http, sim, "POST", "dms", {"bot_id": bot["id"], "user_id": alice["id"], "content": "yo"})
    assert status == 201
    assert dm["channel_id"] == sim.dm_channel_id(bot["id"], alice["id"])
    assert (await control(http, sim, "POST", "redeliver", {"message_id": message["id"]})) == (200, {"sessions": 0})

    await api(http, sim, "POST", f"/channels/{channel}/messages", "tok-1", {"content": "answer"})
    await api(http, sim, "POST", f"/channels/{channel}/typing", "tok-1")
    status, sent = await control(http, sim, "GET", "sent")
    assert [s["content"] for s in sent] == ["answer"]
    assert sent[0]["bot_id"] == bot["id"]
    assert (await control(http, sim, "POST", "wait-sent", {"count": 1}))[0] == 200
    assert (await control(http, sim, "POST", "wait-sent", {"count": 2, "timeout": 0.05}))[0] == 408
    assert (await control(http, sim, "GET", "typing"))[1] == [{"bot_id": bot["id"], "channel_id": channel}]

    assert (await control(http, sim, "POST", "rate-limit-next", {"count": 1}))[1] == {"pending_faults": 1}
    assert (await control(http, sim, "POST", "fail-next", {"count": 1, "status": 500}))[1] == {"pending_faults": 2}
    status, state = await control(http, sim, "GET", "state")
    assert state["connected_bot_ids"] == []
    assert state["bots"][0]["id"] == bot["id"]
    assert state["pending_faults"] == 2
    assert (await control(http, sim, "POST", "drop-connections", {}))[1] == {"dropped": 0}
    assert (await control(http, sim, "POST", "reset"))[1] == {"reset": True}
    assert sim.sent == []
    assert sim.typing == []
    assert not sim.state.faults
    assert (await control(http, sim, "POST", "revoke-token", {"token": "tok-1"}))[0] == 200
    status, _, _ = await api(http, sim, "GET", "/users/@me", "tok-1")
    assert status == 401


async def test_control_errors(sim: DiscordSimulator, http: aiohttp.ClientSession) -> None:
    status, body = await control(http, sim, "POST", "messages", {"channel_id": "1", "author_id": "2"})
    assert status == 404
    assert "unknown channel" in body["error"]
    status, body = await control(http, sim, "POST", "users", {})
    assert status == 400
    assert "name" in body["error"]


async def test_enforced_nonce_deduplicates_a_retried_create(sim: DiscordSimulator, http: aiohttp.ClientSession) -> None:
    bot = sim.add_bot("omni-bot")
    channel = sim.add_guild("acme", bots=[bot.id]).channel_ids["general"]
    path = f"/channels/{channel}/messages"
    body = {"content": "once", "nonce": "1234", "enforce_nonce": True}
    _, first, _ = await api(http, sim, "POST", path, bot.token, body)
    _, again, _ = await api(http, sim, "POST", path, bot.token, body)
    assert again["id"] == first["id"]
    assert first["nonce"] == "1234"
    assert len(sim.sent) == 1


async def test_oldest_messages_are_forgotten_beyond_the_limit(http: aiohttp.ClientSession) -> None:
    simulator = DiscordSimulator(message_limit=3)
    await simulator.start()
    try:
        bot = simulator.add_bot("omni-bot")
        alice = simulator.add_user("alice")
        channel = simulator.add_guild("acme", bots=[bot.id]).channel_ids["general"]
        files = [{"filename": "a.txt", "data": b"a"}]
        ids = [(await simulator.post_message(channel, alice.id, str(i), attachments=files))["id"] for i in range(5)]
        assert sorted(simulator.state.messages) == sorted(ids[2:])
        assert len(simulator.state.attachments) == 3
        status, body, _ = await api(http, simulator, "GET", f"/channels/{channel}/messages", bot.token)
        assert status == 200
        assert [m["content"] for m in body] == ["4", "3", "2"]
    finally:
        await simulator.stop()
