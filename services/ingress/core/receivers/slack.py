"""Slack's receiver: Events API envelopes (HTTP webhooks, or Socket Mode payloads) → `Received`.

Authentication is Slack's own `v0` request signature, always: Slack signs every request with the app's signing
secret, so there is nothing a development opt-out would spare, and `webhook_auth: "none"` does not turn it off
(an instance without a signing secret receives no webhooks at all; it can use Socket Mode). The instance's webhook
secret plays no part here: the signature takes its place. The signature covers the raw bytes and is checked
before anything is parsed, in constant time, and only within five minutes of its timestamp (replays).

What is answered (CONTRACT.md "Slack"): direct messages (`im`), mentions of the bot (`app_mention`, or `<@BOT>` in
the text; the mention is stripped), and replies in a thread the bot is in. "The bot is in the thread" is decided
cheaply, without calling Slack:
- the thread's root was posted by the bot (`parent_user_id` is the bot), or
- the inbox holds the thread's root (a message addressed to the bot: it was answered in that thread), or the
  marker row of a post the bot made in that thread. The bot's own posts come back as message events; they are
  ignored, but recorded once per thread under `{channel}:{thread_ts}:bot`, so a thread the bot joined on a
  mention in the middle of it is known too. The check needs the inbox, so the parser only names those ids
  (`Received.answer_if_stored`) and the accept path looks them up.
Known limits: a thread is forgotten when the delivery retention purges its rows, and a reply that reaches the hub
before the bot's first post in a thread started by someone else is not answered unless it mentions the bot.

Every message is keyed `{channel}:{ts}`: Slack delivers a mention twice (`app_mention` and `message`, with
different event ids) and retries a webhook not acknowledged in 3 s (`X-Slack-Retry-Num`), and both must land on
the inbox's unique key once.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from servicekit import errors
from servicekit.channels import Channel
from servicekit.instances import Instance, SlackConfig
from servicekit.messages import InboundMessage, Media, Sender
from services.ingress.core.receivers.base import NOT_ADDRESSED, Received, decode_object
from services.ingress.core.receivers.webhook_auth import webhook_unauthenticated

SIGNATURE_HEADER = "x-slack-signature"
TIMESTAMP_HEADER = "x-slack-request-timestamp"
SIGNATURE_VERSION = "v0"
MAX_SIGNATURE_AGE_SECONDS = 5 * 60
"""Slack's replay window: a signed request older (or newer) than this is refused."""

URL_VERIFICATION = "url_verification"
EVENT_CALLBACK = "event_callback"
APP_RATE_LIMITED = "app_rate_limited"

REASON_OWN_POST = "own_post"
REASON_BOT_MESSAGE = "bot_message"
REASON_NO_CONTENT = "no_content"
REASON_UNSUPPORTED_EVENT = "unsupported_event"

_MESSAGE_EVENTS = frozenset({"message", "app_mention"})
_USER_SUBTYPES = frozenset({"", "file_share", "thread_broadcast"})
"""Message subtypes a person writes; edits, deletions, joins, topic changes and the like are not answered."""
_TRACE_OMITTED = frozenset({"token"})
"""Envelope fields never copied into a trace: `token` is Slack's legacy verification token."""


def _lowered(headers: Mapping[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def signature_valid(signing_secret: str, headers: Mapping[str, str], body: bytes, *, now: float | None = None) -> bool:
    """True when `headers` carry Slack's v0 signature of `body` by `signing_secret`, timestamped within 5 minutes."""
    lowered = _lowered(headers)
    presented = lowered.get(SIGNATURE_HEADER, "")
    timestamp = lowered.get(TIMESTAMP_HEADER, "").strip()
    if not signing_secret or not presented or not timestamp.isdigit():
        return False
    now = time.time() if now is None else now
    if abs(now - int(timestamp)) > MAX_SIGNATURE_AGE_SECONDS:
        return False
    base = f"{SIGNATURE_VERSION}:{timestamp}:".encode() + body
    expected = f"{SIGNATURE_VERSION}=" + hmac.new(signing_secret.encode(), base, hashlib.sha256).hexdigest()
    return hmac.compare_digest(presented.encode(), expected.encode())


class SlackReceiver:
    """Slack Events API requests → `Received`; `clock` is for tests of the replay window."""

    channel = Channel.SLACK

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock

    def authenticate(self, instance: Instance, headers: Mapping[str, str], body: bytes) -> None:
        config = instance.config_of(SlackConfig)
        if not signature_valid(config.signing_secret, headers, body, now=self._clock()):
            raise webhook_unauthenticated()

    def parse(self, body: bytes, instance: Instance) -> tuple[Received, dict[str, Any]]:
        envelope = decode_object(body)
        return parse_envelope(envelope, instance), trace_payload(envelope)


def trace_payload(envelope: Mapping[str, Any]) -> dict[str, Any]:
    """The envelope as a trace may show it (without the legacy verification token)."""
    return {key: value for key, value in envelope.items() if key not in _TRACE_OMITTED}


def parse_envelope(envelope: Mapping[str, Any], instance: Instance) -> Received:
    """What one Events API envelope (a webhook body, or a Socket Mode `events_api` payload) amounts to."""
    kind = str(envelope.get("type") or "")
    if kind == URL_VERIFICATION:
        challenge = envelope.get("challenge")
        if not isinstance(challenge, str) or not challenge:
            raise errors.InvalidArgumentError(
                "url_verification without a challenge",
                reason="BODY_NOT_SLACK",
                violations=[errors.FieldViolation("challenge", "required")],
            )
        return Received(event=URL_VERIFICATION, kind="ignored", reason=URL_VERIFICATION, challenge=challenge)
    if kind != EVENT_CALLBACK:
        # app_rate_limited and anything newer: acknowledged, nothing to store.
        return Received(event=kind or "unknown", kind="ignored", reason=kind or REASON_UNSUPPORTED_EVENT)
    event = envelope.get("event")
    if not isinstance(event, dict):
        raise errors.InvalidArgumentError(
            "event_callback without an event",
            reason="BODY_NOT_SLACK",
            violations=[errors.FieldViolation("event", "expected an object")],
        )
    event_type = str(event.get("type") or "")
    if event_type not in _MESSAGE_EVENTS:
        return Received(event=event_type or "unknown", kind="ignored", reason=REASON_UNSUPPORTED_EVENT)
    return _message(envelope, event, event_type, instance.config_of(SlackConfig))


def _bot_user_id(envelope: Mapping[str, Any], config: SlackConfig) -> str:
    """The bot's own user id: the instance's (auth.test at creation), else the installation's in the envelope."""
    if config.bot_user_id:
        return config.bot_user_id
    for authorization in envelope.get("authorizations") or ():
        if isinstance(authorization, dict) and authorization.get("is_bot") and authorization.get("user_id"):
            return str(authorization["user_id"])
    return ""


def _is_own(event: Mapping[str, Any], envelope: Mapping[str, Any], bot_user_id: str) -> bool:
    """The bot's own post: its user id, or a bot post made by this very app."""
    if bot_user_id and event.get("user") == bot_user_id:
        return True
    app_id = event.get("app_id") or (event.get("bot_profile") or {}).get("app_id")
    return bool(event.get("bot_id")) and bool(app_id) and app_id == envelope.get("api_app_id")


def mentions(text: str, bot_user_id: str) -> bool:
    """True when `text` mentions the bot (`<@U123>` or `<@U123|name>`)."""
    return bool(bot_user_id) and re.search(rf"<@{re.escape(bot_user_id)}(\|[^>]*)?>", text) is not None


def strip_mention(text: str, bot_user_id: str) -> str:
    """The text without the bot's mentions and the space around them."""
    if not bot_user_id:
        return text.strip()
    return re.sub(rf"\s*<@{re.escape(bot_user_id)}(\|[^>]*)?>\s*", " ", text).strip()


def _media_type(mime_type: str) -> str:
    major = mime_type.split("/", 1)[0]
    return major if major in ("image", "audio", "video") else "document"


def _media(files: Any) -> tuple[Media, ...]:
    """Shared files as media. `url_private` needs the bot token to download (Slack's files are never public)."""
    media: list[Media] = []
    for item in files if isinstance(files, list) else ():
        if not isinstance(item, dict) or not item.get("url_private"):
            continue
        mime_type = str(item.get("mimetype") or "")
        media.append(
            Media(
                type=_media_type(mime_type),
                mime_type=mime_type,
                url=str(item["url_private"]),
                filename=str(item.get("name") or ""),
                size_bytes=int(item.get("size") or 0),
            )
        )
    return tuple(media)


def _channel_type(event: Mapping[str, Any], channel: str) -> str:
    """`channel_type` as Slack spells it; `app_mention` events carry none, so it comes from the id's prefix."""
    given = str(event.get("channel_type") or "")
    if given:
        return given
    return "im" if channel.startswith("D") else "group" if channel.startswith("G") else "channel"


def _display_name(event: Mapping[str, Any]) -> str:
    profile = event.get("user_profile")
    if not isinstance(profile, dict):
        return ""
    return str(profile.get("display_name") or profile.get("real_name") or profile.get("name") or "")


def _message(envelope: Mapping[str, Any], event: Mapping[str, Any], event_type: str, config: SlackConfig) -> Received:
    channel = str(event.get("channel") or "")
    ts = str(event.get("ts") or "")
    if not channel or not ts:
        return Received(event=event_type, kind="ignored", reason=REASON_UNSUPPORTED_EVENT)
    subtype = str(event.get("subtype") or "")
    bot_user_id = _bot_user_id(envelope, config)
    thread_ts = str(event.get("thread_ts") or "")
    reply_thread = thread_ts or ts
    text = str(event.get("text") or "")
    user = str(event.get("user") or "")
    channel_type = _channel_type(event, channel)
    team_id = str(event.get("team") or envelope.get("team_id") or config.team_id or "")

    def inbound(channel_message_id: str, body: str, media: tuple[Media, ...], is_bot: bool) -> InboundMessage:
        return InboundMessage(
            channel_message_id=channel_message_id,
            chat_id=channel,
            sender=Sender(id=user or str(event.get("bot_id") or ""), display_name=_display_name(event), is_bot=is_bot),
            channel=Channel.SLACK,
            message_type=media[0].type if media else "text",
            text=body,
            media=media,
            is_group=channel_type != "im",
            sent_at=_seconds(ts),
            thread_id=reply_thread,
            raw_event=event_type,
            context={
                # `message_id` overrides the agent payload's (the inbox key `{channel}:{ts}`): the contract says ts.
                "message_id": ts,
                "thread_ts": reply_thread,
                "team_id": team_id,
                "channel_id": channel,
                "channel_type": channel_type,
                "event_id": str(envelope.get("event_id") or ""),
            },
        )

    if _is_own(event, envelope, bot_user_id):
        # Recorded once per thread: later replies in it are answered without a mention.
        own = inbound(f"{channel}:{reply_thread}:bot", text, (), True)
        return Received(event=event_type, kind="ignored", reason=REASON_OWN_POST, message=own)
    if event.get("bot_id") or subtype == "bot_message":
        return Received(event=event_type, kind="ignored", reason=REASON_BOT_MESSAGE)
    if subtype not in _USER_SUBTYPES:
        return Received(event=event_type, kind="ignored", reason=subtype)
    if not user:
        return Received(event=event_type, kind="ignored", reason=REASON_UNSUPPORTED_EVENT)

    key = f"{channel}:{ts}"
    in_thread = bool(thread_ts) and thread_ts != ts
    answer_if_stored: tuple[str, ...] = ()
    addressed = channel_type == "im" or event_type == "app_mention" or mentions(text, bot_user_id)
    if not addressed and in_thread:
        if bot_user_id and event.get("parent_user_id") == bot_user_id:
            addressed = True
        else:
            answer_if_stored = (f"{channel}:{thread_ts}", f"{channel}:{thread_ts}:bot")
    if not addressed and not answer_if_stored:
        return Received(event=event_type, kind="ignored", reason=NOT_ADDRESSED)

    body = strip_mention(text, bot_user_id)
    media = _media(event.get("files"))
    message = inbound(key, body, media, False)
    if not body and not media:
        # Recorded (like Discord's) when addressed to the bot; thread chatter of unknown threads is not stored.
        return Received(
            event=event_type,
            kind="ignored",
            reason=REASON_NO_CONTENT,
            channel_message_id=key if addressed else "",
            message=message if addressed else None,
        )
    return Received(
        event=event_type,
        kind="message",
        channel_message_id=key,
        message=message,
        answer_if_stored=answer_if_stored,
    )


def _seconds(ts: str) -> float:
    try:
        return float(ts)
    except ValueError:
        return 0.0
