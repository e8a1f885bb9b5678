"""Slack Events API webhooks through the accept path, on SQLite and PostgreSQL.

The v0 signature before anything is parsed (every failure a 401 with nothing stored, `webhook_auth: none` no
bypass), the url_verification challenge, and which messages are answered: DMs, mentions (stripped), replies in a
thread the bot is in; never the bot's own posts, other bots, edits, deletions, joins or unaddressed chatter. The
same message as `app_mention` and `message`, and Slack's retries, are stored once.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any

import orjson
import pytest
from omni.common.v1 import channel_pb2
from omni.ingress.v1 import ingress_service_pb2

from servicekit import errors
from servicekit.channels import Channel
from servicekit.instances import WEBHOOK_AUTH_NONE, Instance, SlackConfig
from servicekit.messages import InboundMessage, message_from_json
from services.ingress.core.accept import ACCEPTED, DUPLICATE, IGNORED_DISPOSITION, IngressCore, WebhookResult
from services.ingress.core.receivers.slack import signature_valid
from services.ingress.servicer import IngressServicer
from services.ingress.storage import InboxStore
from tests.helpers.instances import DictDirectory

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
BOT = "UBOT0001"
ALICE = "UALICE01"
TEAM = "T0001"
GENERAL = "C0GENERAL"
DM = "D0ALICE"

SLACKY = Instance(
    name="slacky",
    config=SlackConfig(bot_token="xoxb-test", signing_secret=SECRET, bot_user_id=BOT, team_id=TEAM, team_name="Acme"),
)
OPEN = Instance(name="open", webhook_auth=WEBHOOK_AUTH_NONE, config=SlackConfig(signing_secret=SECRET))


def message_event(
    ts: str,
    *,
    text: str = "hello",
    channel: str = GENERAL,
    channel_type: str | None = "channel",
    user: str | None = ALICE,
    event_type: str = "message",
    **extra: Any,
) -> dict[str, Any]:
    """An event_callback envelope around one message event, as Slack sends it."""
    event: dict[str, Any] = {"type": event_type, "channel": channel, "text": text, "ts": ts, "event_ts": ts}
    if user is not None:
        event["user"] = user
    if channel_type is not None and event_type == "message":
        event["channel_type"] = channel_type
    event.update(extra)
    return {
        "token": "legacy-verification-token",
        "team_id": TEAM,
        "api_app_id": "A0APP",
        "event": event,
        "type": "event_callback",
        "event_id": f"Ev{event_type}{ts.replace('.', '')}",
        "event_time": int(float(ts)),
        "authorizations": [{"team_id": TEAM, "user_id": BOT, "is_bot": True}],
    }


def signed(body: bytes, *, secret: str = SECRET, timestamp: float | None = None) -> dict[str, str]:
    """The headers Slack sends with `body`."""
    stamp = str(int(time.time() if timestamp is None else timestamp))
    digest = hmac.new(secret.encode(), f"v0:{stamp}:".encode() + body, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": f"v0={digest}"}


def make_core(store: InboxStore) -> IngressCore:
    return IngressCore(store, DictDirectory(SLACKY, OPEN))


async def post(core: IngressCore, envelope: dict[str, Any], instance: str = "slacky") -> WebhookResult:
    raw = orjson.dumps(envelope)
    return await core.receive_webhook(instance, Channel.SLACK, raw, signed(raw))


async def stored(store: InboxStore, result: WebhookResult) -> InboundMessage:
    row = await store.get(result.message_id)
    assert row is not None
    return message_from_json(row.message)


# --- signature -------------------------------------------------------------------------------------------------


def test_signature_matches_slacks_documented_example() -> None:
    # api.slack.com/authentication/verifying-requests-from-slack, with its secret, timestamp and body.
    body = (
        b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&"
        b"channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&"
        b"response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&"
        b"trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
    )
    headers = {
        "X-Slack-Request-Timestamp": "1531420618",
        "X-Slack-Signature": "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
    }
    assert signature_valid(SECRET, headers, body, now=1531420618 + 10)
    assert not signature_valid(SECRET, headers, body, now=1531420618 + 301)


async def test_a_signed_message_is_stored(store: InboxStore) -> None:
    result = await post(make_core(store), message_event("1700000000.000100", channel=DM, channel_type="im"))
    assert result.disposition == ACCEPTED
    assert await store.count_by_state() == {"received": 1}


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(lambda raw: signed(raw, secret="not-the-secret"), id="wrong-secret"),
        pytest.param(lambda raw: signed(raw, timestamp=time.time() - 301), id="stale"),
        pytest.param(lambda raw: signed(raw, timestamp=time.time() + 301), id="future"),
        pytest.param(lambda raw: signed(raw + b" "), id="tampered-body"),
        pytest.param(lambda raw: {}, id="no-headers"),
        pytest.param(lambda raw: {"X-Slack-Signature": signed(raw)["X-Slack-Signature"]}, id="no-timestamp"),
        pytest.param(
            lambda raw: {"X-Slack-Request-Timestamp": signed(raw)["X-Slack-Request-Timestamp"]}, id="no-signature"
        ),
        pytest.param(lambda raw: {**signed(raw), "X-Slack-Request-Timestamp": "soon"}, id="bad-timestamp"),
        pytest.param(lambda raw: {"x-omni-webhook-secret": SECRET}, id="webhook-secret-is-no-signature"),
    ],
)
async def test_an_unsigned_request_is_401_and_stores_nothing(store: InboxStore, headers: Any) -> None:
    raw = orjson.dumps(message_event("1700000000.000100", channel=DM, channel_type="im"))
    with pytest.raises(errors.UnauthenticatedError) as caught:
        await make_core(store).receive_webhook("slacky", Channel.SLACK, raw, headers(raw))
    assert caught.value.reason == "WEBHOOK_UNAUTHENTICATED"
    assert await store.count_by_state() == {}


async def test_authentication_comes_before_parsing(store: InboxStore) -> None:
    with pytest.raises(errors.UnauthenticatedError):
        await make_core(store).receive_webhook("slacky", Channel.SLACK, b"<html>", {})
    with pytest.raises(errors.InvalidArgumentError):
        await make_core(store).receive_webhook("slacky", Channel.SLACK, b"<html>", signed(b"<html>"))


async def test_webhook_auth_none_does_not_bypass_the_signature(store: InboxStore) -> None:
    raw = orjson.dumps(message_event("1700000000.000100", channel=DM, channel_type="im"))
    with pytest.raises(errors.UnauthenticatedError):
        await make_core(store).receive_webhook("open", Channel.SLACK, raw, {})
    result = await make_core(store).receive_webhook("open", Channel.SLACK, raw, signed(raw))
    assert result.disposition == ACCEPTED


async def test_unknown_instance_answers_like_a_bad_signature(store: InboxStore) -> None:
    raw = orjson.dumps(message_event("1700000000.000100"))
    with pytest.raises(errors.UnauthenticatedError) as caught:
        await make_core(store).receive_webhook("nobody", Channel.SLACK, raw, signed(raw))
    assert caught.value.reason == "WEBHOOK_UNAUTHENTICATED"


# --- url_verification ------------------------------------------------------------------------------------------


async def test_url_verification_returns_the_challenge(store: InboxStore) -> None:
    envelope = {
        "token": "legacy",
        "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
        "type": "url_verification",
    }
    result = await post(make_core(store), envelope)
    assert (result.disposition, result.reason, result.challenge) == (
        IGNORED_DISPOSITION,
        "url_verification",
        envelope["challenge"],
    )
    assert await store.count_by_state() == {}


async def test_the_servicer_answers_the_challenge(store: InboxStore) -> None:
    async def no_bots(instance_name: str) -> list[Any]:
        return []

    raw = orjson.dumps({"challenge": "chal-123", "type": "url_verification"})
    request = ingress_service_pb2.ReceiveWebhookRequest(
        instance_name="slacky", channel=channel_pb2.CHANNEL_SLACK, body=raw
    )
    request.headers.update(signed(raw))
    servicer = IngressServicer(make_core(store), no_bots)
    response = await servicer.ReceiveWebhook(request, None)  # type: ignore[arg-type]
    assert response.challenge == "chal-123"
    assert response.disposition == ingress_service_pb2.WEBHOOK_DISPOSITION_IGNORED


# --- what is answered ------------------------------------------------------------------------------------------


async def test_a_direct_message_is_answered_in_its_thread(store: InboxStore) -> None:
    envelope = message_event(
        "1700000000.000100",
        channel=DM,
        channel_type="im",
        text="oi",
        user_profile={"display_name": "alice", "real_name": "Alice A."},
    )
    result = await post(make_core(store), envelope)
    assert (result.disposition, result.event) == (ACCEPTED, "message")
    message = await stored(store, result)
    assert message.channel == Channel.SLACK
    assert (message.channel_message_id, message.chat_id, message.text) == (f"{DM}:1700000000.000100", DM, "oi")
    assert (message.sender.id, message.sender.display_name, message.is_group) == (ALICE, "alice", False)
    assert message.thread_id == "1700000000.000100"
    assert message.sent_at == pytest.approx(1700000000.0001)
    assert message.context == {
        "message_id": "1700000000.000100",
        "thread_ts": "1700000000.000100",
        "team_id": TEAM,
        "channel_id": DM,
        "channel_type": "im",
        "event_id": "Evmessage1700000000000100",
    }


async def test_a_mention_is_answered_with_the_mention_stripped(store: InboxStore) -> None:
    result = await post(make_core(store), message_event("1700000000.000200", text=f"<@{BOT}> what is up?"))
    assert result.disposition == ACCEPTED
    message = await stored(store, result)
    assert (message.text, message.is_group, message.chat_id) == ("what is up?", True, GENERAL)
    named = await post(make_core(store), message_event("1700000000.000300", text=f"hey <@{BOT}|omni>, help"))
    assert (await stored(store, named)).text == "hey , help"


async def test_app_mention_and_message_of_one_post_are_stored_once(store: InboxStore) -> None:
    core = make_core(store)
    ts = "1700000000.000400"
    mention = await post(core, message_event(ts, text=f"<@{BOT}> hi", event_type="app_mention"))
    as_message = await post(core, message_event(ts, text=f"<@{BOT}> hi"))
    assert (mention.disposition, as_message.disposition) == (ACCEPTED, DUPLICATE)
    assert as_message.message_id == mention.message_id
    message = await stored(store, mention)
    assert (message.text, message.is_group, message.raw_event) == ("hi", True, "app_mention")
    assert await store.count_by_state() == {"received": 1}


async def test_a_retry_is_stored_once(store: InboxStore) -> None:
    core = make_core(store)
    raw = orjson.dumps(message_event("1700000000.000500", channel=DM, channel_type="im"))
    first = await core.receive_webhook("slacky", Channel.SLACK, raw, signed(raw))
    retry = await core.receive_webhook(
        "slacky", Channel.SLACK, raw, {**signed(raw), "X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"}
    )
    assert (first.disposition, retry.disposition) == (ACCEPTED, DUPLICATE)
    assert await store.count_by_state() == {"received": 1}


async def test_channel_chatter_is_ignored_and_not_stored(store: InboxStore) -> None:
    result = await post(make_core(store), message_event("1700000000.000600", text="lunch?"))
    assert (result.disposition, result.reason) == (IGNORED_DISPOSITION, "not_addressed")
    assert await store.count_by_state() == {}


async def test_a_reply_in_a_thread_the_bot_answered_is_answered(store: InboxStore) -> None:
    core = make_core(store)
    root = "1700000001.000100"
    await post(core, message_event(root, text=f"<@{BOT}> start"))
    reply = await post(core, message_event("1700000001.000200", text="and then?", thread_ts=root, parent_user_id=ALICE))
    assert reply.disposition == ACCEPTED
    message = await stored(store, reply)
    assert (message.thread_id, message.context["thread_ts"], message.text) == (root, root, "and then?")
    stranger = await post(
        core, message_event("1700000001.000300", text="and then?", thread_ts="1699999999.000001", parent_user_id=ALICE)
    )
    assert (stranger.disposition, stranger.reason, stranger.message_id) == (IGNORED_DISPOSITION, "not_addressed", "")
    assert await store.count_by_state() == {"received": 2}


async def test_own_posts_are_ignored_but_mark_the_thread(store: InboxStore) -> None:
    core = make_core(store)
    root = "1700000002.000100"  # someone else's thread; the bot joins it on a mention in the middle
    own = message_event(
        "1700000002.000300", text="happy to help", user=BOT, bot_id="B0BOT", thread_ts=root, app_id="A0APP"
    )
    result = await post(core, own)
    assert (result.disposition, result.reason) == (IGNORED_DISPOSITION, "own_post")
    assert await store.count_by_state() == {"ignored": 1}
    again = await post(core, {**own, "event": {**own["event"], "ts": "1700000002.000400"}})
    assert again.disposition == DUPLICATE  # one marker per thread
    reply = await post(core, message_event("1700000002.000500", text="thanks", thread_ts=root, parent_user_id=ALICE))
    assert reply.disposition == ACCEPTED


async def test_own_posts_without_a_known_user_id_are_told_by_the_app_id(store: InboxStore) -> None:
    bare = Instance(name="bare", config=SlackConfig(signing_secret=SECRET))
    core = IngressCore(store, DictDirectory(bare))
    event = message_event("1700000003.000100", user="UOTHERBOT", bot_id="B0BOT", app_id="A0APP")
    event["authorizations"] = []
    result = await post(core, event, instance="bare")
    assert result.reason == "own_post"


async def test_a_reply_to_a_thread_the_bot_started_is_answered(store: InboxStore) -> None:
    event = message_event("1700000004.000200", text="ok", thread_ts="1700000004.000100", parent_user_id=BOT)
    assert (await post(make_core(store), event)).disposition == ACCEPTED


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ({"bot_id": "B0OTHER", "user": "UOTHERBOT", "app_id": "A0OTHER"}, "bot_message"),
        ({"subtype": "bot_message", "bot_id": "B0LEGACY", "user": None}, "bot_message"),
        ({"subtype": "message_changed", "hidden": True, "message": {"text": f"<@{BOT}> x"}}, "message_changed"),
        ({"subtype": "message_deleted", "hidden": True, "deleted_ts": "1.2"}, "message_deleted"),
        ({"subtype": "channel_join", "text": f"<@{ALICE}> has joined the channel"}, "channel_join"),
    ],
)
async def test_bots_edits_deletions_and_joins_are_ignored(
    store: InboxStore, extra: dict[str, Any], reason: str
) -> None:
    envelope = message_event("1700000005.000100", channel=DM, channel_type="im", text=f"<@{BOT}> hi")
    for key, value in extra.items():
        if value is None:
            envelope["event"].pop(key, None)
        else:
            envelope["event"][key] = value
    result = await post(make_core(store), envelope)
    assert (result.disposition, result.reason) == (IGNORED_DISPOSITION, reason)
    assert await store.count_by_state() == {}


async def test_other_events_are_acknowledged_and_ignored(store: InboxStore) -> None:
    envelope = message_event("1700000006.000100")
    envelope["event"] = {"type": "reaction_added", "user": ALICE, "reaction": "thumbsup"}
    result = await post(make_core(store), envelope)
    assert (result.disposition, result.reason, result.event) == (
        IGNORED_DISPOSITION,
        "unsupported_event",
        "reaction_added",
    )
    limited = await post(make_core(store), {"type": "app_rate_limited", "team_id": TEAM, "minute_rate_limited": 1})
    assert (limited.disposition, limited.reason) == (IGNORED_DISPOSITION, "app_rate_limited")


async def test_shared_files_become_media(store: InboxStore) -> None:
    envelope = message_event(
        "1700000007.000100",
        channel=DM,
        channel_type="im",
        text="",
        subtype="file_share",
        files=[
            {
                "id": "F1",
                "name": "cat.png",
                "mimetype": "image/png",
                "size": 1234,
                "url_private": "https://files.slack.com/files-pri/T1-F1/cat.png",
            }
        ],
    )
    result = await post(make_core(store), envelope)
    assert result.disposition == ACCEPTED
    message = await stored(store, result)
    assert message.message_type == "image"
    media = message.media[0]
    assert (media.type, media.mime_type, media.filename, media.size_bytes) == ("image", "image/png", "cat.png", 1234)
    assert media.url == "https://files.slack.com/files-pri/T1-F1/cat.png"


async def test_a_bare_mention_has_no_content(store: InboxStore) -> None:
    result = await post(make_core(store), message_event("1700000008.000100", text=f"<@{BOT}>"))
    assert (result.disposition, result.reason) == (IGNORED_DISPOSITION, "no_content")
