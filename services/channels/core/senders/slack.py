"""Slack's side of the outbox: `SlackSender` sends, reconciles and lists over Slack's Web API (slack_sdk).

Clients
    Each bot token gets one `AsyncWebClient` (kept in a bounded LRU cache, with the DM channels it opened and, once
    asked, its own identity). All of them share one aiohttp session: the token travels in each request's
    `Authorization` header, so a client is only a token, a base URL and retry handlers, and a send costs one HTTP
    request on a pooled connection, nothing else. The base URL is `AUTOMAGIK_OMNI_SLACK_API_URL`, so a simulator or
    a Slack-compatible server may stand in. A changed token is simply another cache key; the old one ages out.

Rate limits (Slack's 429 with `Retry-After`, in seconds)
    slack_sdk retries nothing but connection errors by default. The sender adds its own `AsyncRetryHandler`
    (`_BoundedRateLimitRetry`): a 429 whose `Retry-After` is at most `max_ratelimit_wait_seconds`, and fits in what
    is left of the call's timeout, is slept through in place (at most `max_ratelimit_retries` times); a longer one
    is not waited for but handed back to the outbox as `ChannelTransientError(rate_limited=True, retry_after=...)`,
    so a worker never sits on one chat for a minute.
    slack_sdk's own `AsyncRateLimitErrorRetryHandler` is not used because it sleeps whatever Slack asks, uncapped.
    Every call is also bounded by `send_timeout_seconds`.

Connection retries
    slack_sdk's default handler retries a reset or dropped connection, which is fine for a read but may post a
    message twice. `_SafeConnectionRetry` keeps it for reads and, for the two calls that create a message
    (`chat.postMessage`, `files.completeUploadExternal`), retries only a connection that was never established.
    Any other failure of those calls is `outcome_unknown`, and the outbox asks `find_sent` before sending again.

Error classification (Slack answers HTTP 200 with `{"ok": false, "error": "<word>"}`; see `classify`)
    - 429 / `ratelimited`: transient, `rate_limited`, with `Retry-After`.
    - `internal_error`, `fatal_error` (Slack: "some aspect of the operation may have succeeded"): transient, and
      `outcome_unknown` when the call posts. `service_unavailable`, `request_timeout` (the body did not arrive):
      transient. A 5xx without a Slack body: transient, `outcome_unknown` for a 502/504 (a proxy gave up waiting).
    - `invalid_auth`, `not_authed`, `account_inactive`, `token_revoked`, `token_expired`, `missing_scope`, ...:
      rejected, `REASON_UNAUTHORIZED` (the token must be fixed; retrying is useless).
    - `channel_not_found`, `user_not_found`: rejected, `REASON_NOT_FOUND`. Every other word (`not_in_channel`,
      `is_archived`, `msg_too_long`, `no_text`, ...): rejected with Slack's own word.
    - A timeout or a dropped connection while a message-creating call ran: transient, `outcome_unknown`. A
      connection that never opened, or a failure while opening a DM, downloading or uploading the file bytes,
      happened before anything was posted.
"""

from __future__ import annotations

import asyncio
import html
import re
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError, SlackRequestError
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import AsyncConnectionErrorRetryHandler
from slack_sdk.http_retry.request import HttpRequest as RetryRequest
from slack_sdk.http_retry.response import HttpResponse as RetryResponse
from slack_sdk.http_retry.state import RetryState
from slack_sdk.web.async_client import AsyncWebClient

from servicekit.address_guard import AddressRefusedError, guarded_session
from servicekit.channels import Channel
from servicekit.instances import Instance, SlackConfig
from servicekit.messages import Media
from services.channels.core.models import ConnectionState, ConnectionStatus, OutboundPart
from services.channels.core.senders.base import (
    REASON_MISCONFIGURED,
    REASON_NOT_FOUND,
    REASON_REJECTED,
    REASON_UNAUTHORIZED,
    Account,
    ChannelError,
    ChannelRejectedError,
    ChannelTransientError,
    ChatChannel,
    Contact,
    SendTarget,
    WithoutStructuredSends,
    bot_token_of,
    describe_error,
)
from services.channels.core.senders.media_files import MediaFiles

T = TypeVar("T")

DEFAULT_API_URL = "https://slack.com/api/"

POSTING_METHODS = ("chat.postMessage", "files.completeUploadExternal")
"""The Web API calls that create a message: never blindly retried, and a lost answer means "maybe posted"."""

USER_ID = re.compile(r"^[UW][A-Z0-9]{2,}$")
"""A recipient that is a user (U... or, on Enterprise Grid, W...) gets a DM, opened with conversations.open."""

TRANSIENT_ERRORS = frozenset({"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"})
MAYBE_DONE_ERRORS = frozenset({"internal_error", "fatal_error"})
"""Slack documents these as "it's possible some aspect of the operation succeeded before the error was raised"."""
UNAUTHORIZED_ERRORS = frozenset(
    {
        "invalid_auth",
        "not_authed",
        "account_inactive",
        "token_revoked",
        "token_expired",
        "missing_scope",
        "no_permission",
        "not_allowed_token_type",
        "ekm_access_denied",
        "team_access_not_granted",
    }
)
NOT_FOUND_ERRORS = frozenset({"channel_not_found", "user_not_found", "users_not_found"})
PROXY_TIMEOUT_STATUSES = frozenset({502, 504})

HISTORY_PAGE = 200
HISTORY_MAX_PAGES = 5
"""`find_sent` reads at most 1000 messages after `since`: far more than the seconds a crashed send can be old."""
LIST_PAGE = 200
LIST_MAX_PAGES = 200
"""`list_channels` stops after 40,000 channels rather than follow a cursor that never ends."""

DM_CACHE_SIZE = 1024
"""Opened DMs remembered per token (a DM channel id never changes, so the cache only saves a call)."""
CONTACTS_CACHE_SECONDS = 60.0
"""How long a workspace's user list is reused for contact pages (a new colleague shows within a minute)."""


# ---------------------------------------------------------------------- retry handlers


_DEADLINE: ContextVar[float] = ContextVar("slack_call_deadline", default=float("inf"))
"""`time.monotonic()` by which the current sender call must be done (set by `SlackSender._bounded`)."""

RETRY_MARGIN_SECONDS = 1.0
"""Time left for the retried request itself after a rate-limit sleep."""


class _BoundedRateLimitRetry(AsyncRetryHandler):
    """Sleeps through a 429 only when Slack's `Retry-After` is short and fits in the call's remaining time; any
    other reaches the caller as the 429 (and the outbox as `retry_after`)."""

    def __init__(self, max_retry_count: int, max_wait_seconds: float) -> None:
        super().__init__(max_retry_count=max_retry_count)
        self.max_wait_seconds = max_wait_seconds

    async def _can_retry_async(
        self,
        *,
        state: RetryState,
        request: RetryRequest,
        response: RetryResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if response is None or response.status_code != 429:
            return False
        wait = _wait_of(response)
        # Sleeping into the call's own timeout would turn a clean 429 into an "outcome unknown" timeout.
        remaining = _DEADLINE.get() - time.monotonic() - RETRY_MARGIN_SECONDS
        return wait <= min(self.max_wait_seconds, remaining)

    async def prepare_for_next_attempt_async(
        self,
        *,
        state: RetryState,
        request: RetryRequest,
        response: RetryResponse | None = None,
        error: Exception | None = None,
    ) -> None:
        state.next_attempt_requested = True
        await asyncio.sleep(_wait_of(response))
        state.increment_current_attempt()


class _SafeConnectionRetry(AsyncConnectionErrorRetryHandler):
    """slack_sdk's connection retry, except that a call creating a message is retried only when it never connected
    (a reset after the request left may mean the message exists: that is the outbox's reconciliation to decide)."""

    async def _can_retry_async(
        self,
        *,
        state: RetryState,
        request: RetryRequest,
        response: RetryResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if _is_posting(request.url):
            return isinstance(error, aiohttp.ClientConnectorError) and not isinstance(error, AddressRefusedError)
        return await super()._can_retry_async(state=state, request=request, response=response, error=error)


def _wait_of(response: RetryResponse | None) -> float:
    """The pause a 429 asks for; 1 s when it names none (Slack always does)."""
    wait = _retry_after(response.headers) if response is not None else None
    return wait if wait is not None else 1.0


def _is_posting(url: str) -> bool:
    return urlsplit(url).path.rsplit("/", 1)[-1] in POSTING_METHODS


# ---------------------------------------------------------------------- the sender


@dataclass(frozen=True)
class _Identity:
    """auth.test of a token: who the bot is and in which workspace."""

    user_id: str
    user: str
    bot_id: str
    team_id: str
    team: str


@dataclass
class _Client:
    """One token's Web API client and what it learnt: the DMs it opened, its own identity once asked, and the
    workspace's people (users.list) for a short while."""

    web: AsyncWebClient
    dm_channels: OrderedDict[str, str] = field(default_factory=OrderedDict)
    identity: _Identity | None = None
    contacts: tuple[float, list[Contact]] | None = None


@dataclass
class _Attempt:
    """How far one call got: whether the call that creates the message had started when it failed."""

    sending: bool = False


class SlackSender(WithoutStructuredSends):
    """The `ChannelSender` of Slack: every call uses the instance's own bot token over Slack's Web API."""

    channel = Channel.SLACK

    def __init__(
        self,
        *,
        api_url: str = DEFAULT_API_URL,
        send_timeout_seconds: float = 15.0,
        max_ratelimit_wait_seconds: float = 10.0,
        max_ratelimit_retries: int = 2,
        media_max_bytes: int = 50 * 1024 * 1024,
        max_clients: int = 512,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        """Args:
        api_url: The Web API base (`AUTOMAGIK_OMNI_SLACK_API_URL`); a missing final "/" is added.
        send_timeout_seconds: Bound of every call, rate-limit sleeps and the file upload included.
        max_ratelimit_wait_seconds: Longest 429 pause slept through in place; a longer one is handed back to the
            outbox as `retry_after`. Keep it below `send_timeout_seconds`.
        max_ratelimit_retries: 429s slept through per call before the next one is handed back.
        media_max_bytes: Largest file sent (base64 or downloaded); a bigger one is refused before any upload.
        max_clients: Tokens whose client is kept (least recently used dropped first).
        session: Carries every Web API call, upload and media download (not closed here); one guarded session
            is created, and closed by `aclose`, when None.
        """
        if send_timeout_seconds <= 0 or max_ratelimit_wait_seconds < 0 or max_ratelimit_retries < 0:
            raise ValueError("timeouts must be positive and rate-limit bounds not negative")
        if max_clients < 1:
            raise ValueError("max_clients must be at least 1")
        self._api_url = api_url if api_url.endswith("/") else api_url + "/"
        self._timeout = send_timeout_seconds
        self._max_ratelimit_wait = max_ratelimit_wait_seconds
        self._max_ratelimit_retries = max_ratelimit_retries
        self._media = MediaFiles(media_max_bytes, self._ensure_session)
        self._max_clients = max_clients
        self._session = session
        self._owns_session = False
        self._clients: OrderedDict[str, _Client] = OrderedDict()

    async def aclose(self) -> None:
        """Forget every client (they own nothing) and close the session when this sender created it."""
        self._clients.clear()
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None
            self._owns_session = False

    # ------------------------------------------------------------------ sending

    async def send_text(self, instance: Instance, target: SendTarget, text: str) -> str:
        """chat.postMessage to the channel (or the user's DM), inside the thread the reply belongs to; returns the
        new message's `ts`, Slack's id of a message within its channel."""
        client = self._client(instance)

        async def send(attempt: _Attempt) -> str:
            channel_id = await self._resolve(client, target.chat_id)
            options: dict[str, Any] = {"channel": channel_id, "text": text}
            thread = _thread_of(target)
            if thread:
                options["thread_ts"] = thread
            attempt.sending = True
            response = await client.web.chat_postMessage(**options)
            return str(response.get("ts") or "")

        return await self._bounded(send, "the message")

    async def send_media(self, instance: Instance, target: SendTarget, media: Media, caption: str) -> str:
        """Upload one file with the files API v2 and share it in the chat (and thread) with the caption as its
        comment; returns the share's message `ts` when Slack already reports it, else the file id.

        The three steps are made here rather than through `files_upload_v2` so that only the last one
        (files.completeUploadExternal, which posts the message) counts as "maybe sent" when it fails.
        """
        client = self._client(instance)

        async def send(attempt: _Attempt) -> str:
            data, filename = await self._media.read(media)
            channel_id = await self._resolve(client, target.chat_id)
            ticket = await client.web.files_getUploadURLExternal(filename=filename, length=len(data))
            upload_url, file_id = str(ticket.get("upload_url") or ""), str(ticket.get("file_id") or "")
            if not upload_url or not file_id:
                raise ChannelTransientError("Slack gave no upload URL for the file")
            await self._upload(upload_url, data)
            comment = caption or media.caption
            attempt.sending = True
            completion = await client.web.files_completeUploadExternal(
                files=[{"id": file_id, "title": filename}],
                channel_id=channel_id,
                initial_comment=comment or None,
                thread_ts=_thread_of(target) or None,
            )
            return _share_ts(completion.get("files"), channel_id) or file_id

        return await self._bounded(send, "the file")

    async def send_presence(self, instance: Instance, chat_id: str, presence: str, duration_ms: int) -> None:
        """Nothing: a bot has no typing indicator over the Web API (only the legacy RTM websocket had one, and
        Slack's "assistant thread status" needs the app to be an AI assistant). Presence is best effort anyway."""
        return None

    async def _upload(self, url: str, data: bytes) -> None:
        """POST the bytes to the pre-signed upload URL Slack handed out; nothing is posted in a chat yet."""
        session = self._ensure_session()
        async with session.post(url, data=data, allow_redirects=False) as response:
            if response.status == 200:
                return
            message = f"Slack refused the file upload ({response.status} {response.reason or ''})".strip()
            if response.status >= 500 or response.status == 429:
                raise ChannelTransientError(message, retry_after=_retry_after(response.headers))
            raise ChannelRejectedError(message, status=400)

    # ------------------------------------------------------------------ reconciliation

    async def find_sent(
        self, instance: Instance, chat_id: str, part: OutboundPart, since: float, exclude: set[str]
    ) -> str | None:
        """The earliest message of this bot in the chat (its thread, when the part went to one) since `since` with
        the part's text, whose `ts` (or file id, for a file reported by id) is not in `exclude`.

        A reply in a thread is not in conversations.history, so a threaded part is looked up with
        conversations.replies. Slack escapes `&`, `<` and `>` in stored text: both sides are compared unescaped
        and stripped.
        """
        client = self._client(instance)
        wanted = _comparable(part.text or (part.media.caption if part.media else ""))
        thread = part.thread_id or part.quoted_message_id

        async def search(attempt: _Attempt) -> str | None:
            identity = await self._identity(client)
            channel_id = await self._resolve(client, chat_id)
            found: list[tuple[float, str]] = []
            async for message in self._messages(client, channel_id, thread, since):
                ts = str(message.get("ts") or "")
                if not ts or not _is_from(message, identity):
                    continue
                file_ids = {str(f.get("id")) for f in message.get("files") or [] if isinstance(f, dict)}
                if ts in exclude or file_ids & exclude:
                    continue
                if part.media is not None and not file_ids:
                    continue
                if _comparable(str(message.get("text") or "")) == wanted or (part.media is not None and not wanted):
                    found.append((float(ts), ts))
            return min(found)[1] if found else None

        return await self._bounded(search, "the history request")

    async def _messages(
        self, client: _Client, channel_id: str, thread: str, since: float
    ) -> AsyncIterator[dict[str, Any]]:
        """The messages after `since`: of the thread when there is one (falling back to the channel when Slack no
        longer knows the thread), else of the channel; a few pages at most."""
        oldest = f"{since:.6f}"
        if thread:
            try:
                async for message in self._pages(
                    client.web.conversations_replies, "messages", channel=channel_id, ts=thread, oldest=oldest
                ):
                    yield message
                return
            except SlackApiError as exc:
                if _error_word(exc) != "thread_not_found":
                    raise
        async for message in self._pages(
            client.web.conversations_history, "messages", channel=channel_id, oldest=oldest
        ):
            yield message

    async def _pages(
        self, method: Callable[..., Awaitable[Any]], key: str, **params: Any
    ) -> AsyncIterator[dict[str, Any]]:
        """Items of `key` across cursor pages, HISTORY_MAX_PAGES at most."""
        cursor = ""
        for _ in range(HISTORY_MAX_PAGES):
            response = await method(limit=HISTORY_PAGE, inclusive=True, cursor=cursor or None, **params)
            for item in response.get(key) or []:
                if isinstance(item, dict):
                    yield item
            cursor = _next_cursor(response)
            if not cursor:
                return

    # ------------------------------------------------------------------ account and channels

    async def register_webhook(self, instance: Instance, webhook_url: str) -> bool:
        """Slack's Request URL is set by the operator in the Slack app's settings (the instance's webhook_url
        shows what to paste); the Web API cannot set it."""
        return False

    async def check_account(self, instance: Instance) -> Account:
        """auth.test with the instance's token: the bot user and the workspace it is installed in."""
        client = self._client(instance)

        async def check(attempt: _Attempt) -> Account:
            identity = await self._auth_test(client)
            return Account(
                id=identity.user_id,
                name=identity.user,
                workspace_id=identity.team_id,
                workspace_name=identity.team,
            )

        return await self._bounded(check, "the token check")

    async def connection_status(self, instance: Instance, *, include_qr_code: bool) -> ConnectionStatus:
        """auth.test: CONNECTED with the bot and its workspace, or ERROR with Slack's word (Slack has no QR code).

        The Web API is stateless, so "connected" means "the token works now"; whether events arrive depends on the
        app's Request URL, which Slack does not report.
        """
        started = time.monotonic()
        try:
            client = self._client(instance)
            identity = await self._bounded(lambda attempt: self._auth_test(client), "the token check")
        except ChannelError as exc:
            cause = exc.__cause__
            raw = _error_word(cause) if isinstance(cause, SlackApiError) else ""
            return ConnectionStatus(state=ConnectionState.ERROR, raw_state=raw, detail=exc.message)
        return ConnectionStatus(
            state=ConnectionState.CONNECTED,
            raw_state="ok",
            workspaces=((identity.team_id, identity.team),) if identity.team_id else (),
            latency_ms=(time.monotonic() - started) * 1000,
            account_id=identity.user_id,
            account_name=identity.user,
        )

    async def list_channels(self, instance: Instance) -> list[ChatChannel]:
        """The workspace's public and private channels the bot can see (not archived), across cursor pages."""
        client = self._client(instance)

        async def collect(attempt: _Attempt) -> list[ChatChannel]:
            identity = await self._identity(client)
            found: list[ChatChannel] = []
            cursor = ""
            for _ in range(LIST_MAX_PAGES):
                response = await client.web.conversations_list(
                    types="public_channel,private_channel",
                    exclude_archived=True,
                    limit=LIST_PAGE,
                    cursor=cursor or None,
                )
                for channel in response.get("channels") or []:
                    if not isinstance(channel, dict) or not channel.get("id"):
                        continue
                    found.append(
                        ChatChannel(
                            id=str(channel["id"]),
                            name=str(channel.get("name") or ""),
                            kind="text",
                            workspace_id=identity.team_id,
                            workspace_name=identity.team,
                        )
                    )
                cursor = _next_cursor(response)
                if not cursor:
                    break
            return found

        return await self._bounded(collect, "the channel list request")

    async def list_contacts(self, instance: Instance) -> list[Contact] | None:
        """The workspace's people (users.list across cursor pages; deleted users and bots left out), by name.

        Slack has no count or offset: a page of the Omni API needs the whole list, so it is read once and kept
        `CONTACTS_CACHE_SECONDS` per token rather than walked again for every page."""
        client = self._client(instance)
        now = time.monotonic()
        if client.contacts is not None and now - client.contacts[0] < CONTACTS_CACHE_SECONDS:
            return client.contacts[1]

        async def collect(attempt: _Attempt) -> list[Contact]:
            found: list[Contact] = []
            cursor = ""
            for _ in range(LIST_MAX_PAGES):
                response = await client.web.users_list(limit=LIST_PAGE, cursor=cursor or None)
                for member in response.get("members") or []:
                    if isinstance(member, dict) and member.get("id") and not member.get("deleted"):
                        if member.get("is_bot") or member.get("id") == "USLACKBOT":
                            continue
                        found.append(_contact(member))
                cursor = _next_cursor(response)
                if not cursor:
                    break
            return sorted(found, key=lambda c: (c.name.casefold(), c.id))

        contacts = await self._bounded(collect, "the user list request")
        client.contacts = (now, contacts)
        return contacts

    # ------------------------------------------------------------------ clients

    def _client(self, instance: Instance) -> _Client:
        """The cached client of the instance's token (most recently used last; the oldest dropped past the cap)."""
        token = _token_of(instance)
        client = self._clients.get(token)
        if client is not None:
            self._clients.move_to_end(token)
            return client
        web = AsyncWebClient(
            token=token,
            base_url=self._api_url,
            session=self._ensure_session(),
            timeout=max(1, int(self._timeout)),
            retry_handlers=[
                _SafeConnectionRetry(),
                _BoundedRateLimitRetry(self._max_ratelimit_retries, self._max_ratelimit_wait),
            ],
        )
        client = self._clients[token] = _Client(web=web)
        while len(self._clients) > self._max_clients:
            self._clients.popitem(last=False)
        return client

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = guarded_session()
            self._owns_session = True
        return self._session

    async def _auth_test(self, client: _Client) -> _Identity:
        """auth.test, remembered on the client (a token's identity does not change)."""
        response = await client.web.auth_test()
        identity = _Identity(
            user_id=str(response.get("user_id") or ""),
            user=str(response.get("user") or ""),
            bot_id=str(response.get("bot_id") or ""),
            team_id=str(response.get("team_id") or ""),
            team=str(response.get("team") or ""),
        )
        client.identity = identity
        return identity

    async def _identity(self, client: _Client) -> _Identity:
        return client.identity if client.identity is not None else await self._auth_test(client)

    async def _resolve(self, client: _Client, chat_id: str) -> str:
        """The channel id of `chat_id`: itself, or the DM channel of a user id (opened once, then cached)."""
        chat_id = chat_id.strip()
        if not chat_id:
            raise ChannelRejectedError("the Slack recipient is empty", status=400)
        if not USER_ID.match(chat_id):
            return chat_id
        cached = client.dm_channels.get(chat_id)
        if cached is not None:
            client.dm_channels.move_to_end(chat_id)
            return cached
        response = await client.web.conversations_open(users=chat_id)
        channel = response.get("channel")
        channel_id = str(channel.get("id") or "") if isinstance(channel, dict) else ""
        if not channel_id:
            raise ChannelTransientError(f"Slack opened no DM channel for {chat_id}")
        client.dm_channels[chat_id] = channel_id
        while len(client.dm_channels) > DM_CACHE_SIZE:
            client.dm_channels.popitem(last=False)
        return channel_id

    async def _bounded(self, operation: Callable[[_Attempt], Awaitable[T]], what: str) -> T:
        """Run `operation` within the send timeout and turn whatever it raised into a classified channel error."""
        attempt = _Attempt()
        # wait_for runs `operation` in a task that copies this context: the retry handler sees the deadline.
        token = _DEADLINE.set(time.monotonic() + self._timeout)
        try:
            return await asyncio.wait_for(operation(attempt), self._timeout)
        except ChannelError:
            raise
        except TimeoutError as exc:
            raise ChannelTransientError(
                f"Slack did not answer {what} within {self._timeout:g} s", outcome_unknown=attempt.sending
            ) from exc
        except (SlackClientError, aiohttp.ClientError, OSError) as exc:
            raise classify(exc, what, sending=attempt.sending) from exc
        finally:
            _DEADLINE.reset(token)

    # ------------------------------------------------------------------ media


# ---------------------------------------------------------------------- classification


def classify(exc: BaseException, what: str, *, sending: bool) -> ChannelError:
    """The channel error of a slack_sdk or network failure; `sending` says whether the call that creates the
    message had started (only then may a lost answer mean a posted message)."""
    if isinstance(exc, SlackApiError):
        return _classify_api(exc, what, sending=sending)
    if isinstance(exc, SlackRequestError):
        return ChannelRejectedError(f"slack_sdk refused {what}: {exc}", status=400)
    if isinstance(exc, AddressRefusedError):
        return ChannelRejectedError(f"the Slack API address is refused: {exc}", reason=REASON_MISCONFIGURED, status=400)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return ChannelTransientError(f"could not connect to Slack for {what}: {describe_error(exc)}")
    return ChannelTransientError(f"could not reach Slack for {what}: {describe_error(exc)}", outcome_unknown=sending)


def _classify_api(exc: SlackApiError, what: str, *, sending: bool) -> ChannelError:
    response = exc.response
    status = int(getattr(response, "status_code", None) or getattr(response, "status", 0) or 0)
    headers = getattr(response, "headers", None) or {}
    word = _error_word(exc)
    if status == 429 or word == "ratelimited":
        retry_after = _retry_after(headers)
        hint = f"; retry in {retry_after:g} s" if retry_after is not None else ""
        return ChannelTransientError(
            f"Slack rate limited {what} ({word or status}){hint}", rate_limited=True, retry_after=retry_after
        )
    details = _details(exc)
    if word in TRANSIENT_ERRORS:
        return ChannelTransientError(
            f"Slack failed {what}: {word}{details}", outcome_unknown=sending and word in MAYBE_DONE_ERRORS
        )
    if word in UNAUTHORIZED_ERRORS:
        return ChannelRejectedError(
            f"Slack refused the bot token: {word}{details}", reason=REASON_UNAUTHORIZED, status=401
        )
    if word in NOT_FOUND_ERRORS:
        return ChannelRejectedError(f"Slack refused {what}: {word}{details}", reason=REASON_NOT_FOUND, status=404)
    if word:
        return ChannelRejectedError(f"Slack refused {what}: {word}{details}", reason=REASON_REJECTED, status=400)
    if status >= 500 or status == 0 or status == 200:
        # No Slack body: a proxy's error page, or a body that is not JSON. Slack's own failures say `ok: false`.
        return ChannelTransientError(
            f"Slack failed {what} (HTTP {status or '?'}, no Slack error)",
            outcome_unknown=sending and (status in PROXY_TIMEOUT_STATUSES or status in (0, 200)),
        )
    return ChannelRejectedError(f"Slack refused {what} (HTTP {status})", reason=REASON_REJECTED, status=status)


def _error_word(exc: SlackApiError) -> str:
    data = getattr(exc.response, "data", None)
    return str(data.get("error") or "") if isinstance(data, dict) else ""


def _details(exc: SlackApiError) -> str:
    """Slack's extra words (`response_metadata.messages`, e.g. which argument was invalid), or ""."""
    data = getattr(exc.response, "data", None)
    metadata = data.get("response_metadata") if isinstance(data, dict) else None
    messages = metadata.get("messages") if isinstance(metadata, dict) else None
    if isinstance(messages, list) and messages:
        return " — " + "; ".join(str(m) for m in messages)
    return ""


def _retry_after(headers: Mapping[str, Any]) -> float | None:
    """Seconds of a `Retry-After` header (any case; a list value as slack_sdk's retry responses carry), or None
    when absent or not a number."""
    raw: Any = None
    for key, value in headers.items():
        if str(key).lower() == "retry-after":
            raw = value
            break
    if isinstance(raw, list):
        raw = raw[0] if raw else None
    try:
        return max(0.0, float(raw)) if raw is not None else None
    except (TypeError, ValueError):
        return None


# ---------------------------------------------------------------------- helpers


def _token_of(instance: Instance) -> str:
    return bot_token_of(instance, SlackConfig)


def _thread_of(target: SendTarget) -> str:
    """The `thread_ts` of a send: the thread the router named, else the message answered (its thread starts
    there), else none (a top-level message)."""
    return target.thread_id or target.reply_to


def _next_cursor(response: Any) -> str:
    metadata = response.get("response_metadata")
    return str(metadata.get("next_cursor") or "") if isinstance(metadata, dict) else ""


def _is_from(message: Mapping[str, Any], identity: _Identity) -> bool:
    """Whether this bot posted `message` (Slack sets both `user` and `bot_id` on an app's bot posts)."""
    if identity.user_id and message.get("user") == identity.user_id:
        return True
    return bool(identity.bot_id) and message.get("bot_id") == identity.bot_id


def _comparable(text: str) -> str:
    return html.unescape(text).strip()


def _share_ts(files: Any, channel_id: str) -> str:
    """The `ts` of the message sharing the first file in `channel_id`, when completeUploadExternal reports it
    (Slack fills `shares` asynchronously, so it is often not there yet)."""
    if not isinstance(files, list) or not files or not isinstance(files[0], dict):
        return ""
    shares = files[0].get("shares")
    if not isinstance(shares, dict):
        return ""
    for visibility in ("public", "private"):
        places = shares.get(visibility)
        entries = places.get(channel_id) if isinstance(places, dict) else None
        if isinstance(entries, list) and entries and isinstance(entries[0], dict) and entries[0].get("ts"):
            return str(entries[0]["ts"])
    return ""


def _contact(member: dict[str, Any]) -> Contact:
    profile = member.get("profile") if isinstance(member.get("profile"), dict) else {}
    assert isinstance(profile, dict)
    # The person's full name first (what an operator searches for), then the handle.
    name = str(
        profile.get("real_name") or member.get("real_name") or profile.get("display_name") or member.get("name") or ""
    )
    return Contact(
        id=str(member["id"]),
        name=name,
        phone_number=str(profile.get("phone") or ""),
        avatar_url=str(profile.get("image_192") or profile.get("image_72") or ""),
        email=str(profile.get("email") or ""),
    )
