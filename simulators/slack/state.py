"""The simulator's data: workspaces, app installations (bots), users, conversations, messages, files and recordings.

Ids are global across teams (as Slack's are), so a conversation, user or bot token alone finds its team.
"""

from __future__ import annotations

import asyncio
import mimetypes
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from simulators.slack.wire import TsClock, new_id, new_token

DEFAULT_EVENTS = frozenset({"message", "app_mention"})
"""The event types an app subscribes to unless told otherwise (`message.*` and `app_mention`)."""


@dataclass
class Team:
    """A workspace."""

    id: str
    name: str
    domain: str


@dataclass
class Bot:
    """One app installed in one workspace: its bot user, bot token, signing secret and optional app-level token.

    An Omni Slack instance holds exactly these (`slack_bot_token`, `slack_signing_secret`, `slack_app_token`).
    `request_url` is the Events API endpoint; while the app has a Socket Mode connection open, events go there
    instead.
    """

    token: str
    name: str
    team_id: str
    user_id: str
    bot_id: str
    app_id: str
    signing_secret: str
    app_token: str
    verification_token: str
    request_url: str | None = None
    events: set[str] = field(default_factory=lambda: set(DEFAULT_EVENTS))


@dataclass
class User:
    """A workspace member (a human, or the bot user of an app)."""

    id: str
    team_id: str
    name: str
    real_name: str
    is_bot: bool = False
    bot_id: str | None = None
    email: str | None = None


@dataclass
class Channel:
    """A conversation: `channel` (public `C…`), `group` (private `G…`), `im` (`D…`) or `mpim` (`G…`).

    `kind` is the Events API's `channel_type`. Messages are kept in `ts` order; replies sit in the same list with a
    `thread_ts` differing from their `ts`.
    """

    id: str
    team_id: str
    name: str
    kind: str
    members: set[str]
    created: int
    user: str | None = None
    is_general: bool = False
    messages: list[dict[str, Any]] = field(default_factory=list)
    by_ts: dict[str, dict[str, Any]] = field(default_factory=dict)

    def replies(self, thread_ts: str) -> list[dict[str, Any]]:
        """The thread's messages after the parent, oldest first."""
        return [m for m in self.messages if m.get("thread_ts") == thread_ts and m["ts"] != thread_ts]


@dataclass
class Post:
    """Something an app posted through the Web API (`chat.postMessage` or a file share), as tests read it back.

    `args` are the request's parameters as sent; `message` the stored message object.
    """

    method: str
    team_id: str
    bot_user_id: str
    channel: str
    ts: str
    text: str
    thread_ts: str | None
    message: dict[str, Any]
    args: dict[str, Any]
    files: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class StoredFile:
    """An uploaded file: its bytes are served at `url_private` to a bearer of a bot token of the same team."""

    id: str
    team_id: str
    name: str
    title: str
    mimetype: str
    user: str
    created: int
    data: bytes = b""
    uploaded: bool = False


@dataclass
class Fault:
    """A Web API failure armed by `fail_next` for the next call of `method` (`*` for any)."""

    method: str
    status: int
    error: str
    retry_after: int | None


@dataclass
class Attempt:
    """One HTTP POST of an event to a Request URL: the hub's answer or why there was none."""

    status: int | None
    body: str
    headers: dict[str, str]
    retry_num: int
    retry_reason: str
    elapsed: float
    error: str | None = None


@dataclass
class Delivery:
    """One event sent to one app, by HTTP (`attempts`) or Socket Mode (`envelope_id`, `sends`, `acked`).

    `transport` is `http`, `socket` or `none` (the app had neither a connection nor a Request URL).
    `done` is set once the delivery succeeded (2xx or ack) or gave up.
    """

    app_id: str
    team_id: str
    event_id: str
    event_type: str
    transport: str
    envelope: dict[str, Any]
    attempts: list[Attempt] = field(default_factory=list)
    envelope_id: str | None = None
    sends: int = 0
    acked: bool = False
    ack_payload: dict[str, Any] | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def status(self) -> int | None:
        """The last HTTP attempt's status (None for Socket Mode, or when no answer came)."""
        return self.attempts[-1].status if self.attempts else None

    @property
    def ok(self) -> bool:
        """Whether the app acknowledged it (a 2xx answer or a Socket Mode ack)."""
        if self.transport == "socket":
            return self.acked
        return self.status is not None and 200 <= self.status < 300


class SlackState:
    """All teams, apps, users, conversations and what was posted, plus the pending faults."""

    def __init__(self) -> None:
        self.clock = TsClock()
        self.teams: dict[str, Team] = {}
        self.bots: dict[str, Bot] = {}  # by bot token
        self.users: dict[str, User] = {}
        self.channels: dict[str, Channel] = {}
        self.files: dict[str, StoredFile] = {}
        self.posts: list[Post] = []
        self.posted = asyncio.Event()
        self.deliveries: list[Delivery] = []
        self.faults: list[Fault] = []
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.dms: dict[tuple[str, str], str] = {}  # (team, sorted user ids joined) -> channel id

    # ------------------------------------------------------------------ staging

    def add_team(self, name: str, team_id: str | None = None) -> Team:
        team = Team(team_id or new_id("T"), name, name.lower().replace(" ", "-"))
        self.teams[team.id] = team
        return team

    def team(self, team_id: str) -> Team:
        if team_id not in self.teams:
            raise KeyError(f"unknown team {team_id}")
        return self.teams[team_id]

    def add_bot(
        self,
        team_id: str,
        name: str,
        token: str | None,
        signing_secret: str | None,
        app_token: str | None,
        request_url: str | None,
    ) -> Bot:
        self.team(team_id)
        bot_id = new_id("B")
        user = self.add_user(team_id, name, is_bot=True, bot_id=bot_id)
        bot = Bot(
            token=token or new_token("xoxb"),
            name=name,
            team_id=team_id,
            user_id=user.id,
            bot_id=bot_id,
            app_id=new_id("A"),
            signing_secret=signing_secret or secrets.token_hex(16),
            app_token=app_token or new_token("xapp"),
            verification_token=secrets.token_urlsafe(18),
            request_url=request_url,
        )
        if bot.token in self.bots:
            raise ValueError(f"bot token {bot.token} is already in use")
        self.bots[bot.token] = bot
        for channel in self.channels.values():
            if channel.team_id == team_id and channel.kind == "channel" and channel.is_general:
                channel.members.add(user.id)
        return bot

    def bot_by_app_token(self, app_token: str) -> Bot | None:
        return next((b for b in self.bots.values() if b.app_token == app_token), None)

    def bot_by_user(self, user_id: str) -> Bot | None:
        return next((b for b in self.bots.values() if b.user_id == user_id), None)

    def bot_by_app(self, app_id: str) -> Bot:
        found = next((b for b in self.bots.values() if b.app_id == app_id), None)
        if found is None:
            raise KeyError(f"unknown app {app_id}")
        return found

    def add_user(
        self,
        team_id: str,
        name: str,
        *,
        real_name: str | None = None,
        is_bot: bool = False,
        bot_id: str | None = None,
        email: str | None = None,
    ) -> User:
        self.team(team_id)
        user = User(new_id("U"), team_id, name, real_name or name, is_bot, bot_id, email)
        self.users[user.id] = user
        for channel in self.channels.values():
            if channel.team_id == team_id and channel.is_general:
                channel.members.add(user.id)
        return user

    def user(self, user_id: str) -> User:
        if user_id not in self.users:
            raise KeyError(f"unknown user {user_id}")
        return self.users[user_id]

    def add_channel(self, team_id: str, name: str, private: bool, members: set[str], is_general: bool) -> Channel:
        self.team(team_id)
        channel = Channel(
            id=new_id("G" if private else "C"),
            team_id=team_id,
            name=name,
            kind="group" if private else "channel",
            members=members,
            created=int(time.time()),
            is_general=is_general,
        )
        self.channels[channel.id] = channel
        return channel

    def channel(self, channel_id: str) -> Channel:
        if channel_id not in self.channels:
            raise KeyError(f"unknown channel {channel_id}")
        return self.channels[channel_id]

    def open_conversation(self, team_id: str, user_ids: list[str]) -> tuple[Channel, bool]:
        """The `im` (two members) or `mpim` among `user_ids`, created on first use; True when it already existed."""
        key = (team_id, ",".join(sorted(set(user_ids))))
        existing = self.dms.get(key)
        if existing is not None:
            return self.channels[existing], True
        members = set(user_ids)
        if len(members) == 2:
            humans = [u for u in members if not self.users[u].is_bot] or sorted(members)
            channel = Channel(new_id("D"), team_id, "", "im", members, int(time.time()), user=humans[0])
        else:
            name = "mpdm-" + "--".join(sorted(self.users[u].name for u in members)) + "-1"
            channel = Channel(new_id("G"), team_id, name, "mpim", members, int(time.time()))
        self.channels[channel.id] = channel
        self.dms[key] = channel.id
        return channel, False

    # ------------------------------------------------------------------ messages

    def store(self, channel: Channel, message: dict[str, Any]) -> dict[str, Any]:
        """Add a message; a reply also updates its parent's `reply_count`, `reply_users` and `latest_reply`."""
        channel.messages.append(message)
        channel.by_ts[message["ts"]] = message
        thread_ts = message.get("thread_ts")
        if thread_ts and thread_ts != message["ts"]:
            parent = channel.by_ts.get(thread_ts)
            if parent is not None:
                parent["thread_ts"] = thread_ts
                parent["reply_count"] = int(parent.get("reply_count", 0)) + 1
                author = message.get("user")
                users = list(parent.get("reply_users", []))
                if author and author not in users:
                    users.append(author)
                parent["reply_users"] = users
                parent["reply_users_count"] = len(users)
                parent["latest_reply"] = message["ts"]
        return message

    def record_post(self, post: Post) -> None:
        self.posts.append(post)
        self.posted.set()

    def new_file(
        self, team_id: str, name: str, title: str | None, user: str, mimetype: str | None = None
    ) -> StoredFile:
        guessed = mimetype or mimetypes.guess_type(name)[0] or "application/octet-stream"
        stored = StoredFile(new_id("F"), team_id, name, title or name, guessed, user, int(time.time()))
        self.files[stored.id] = stored
        return stored

    def take_fault(self, method: str) -> Fault | None:
        for index, fault in enumerate(self.faults):
            if fault.method in (method, "*"):
                return self.faults.pop(index)
        return None
