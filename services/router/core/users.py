"""Users and sessions as an operator manages them: list, read, link (merge), erase, reset.

A user is a person: one row, known under several external ids (`user_identities`), with one session per chat. The
router resolves every inbound message to a user through those identities, so re-pointing identities is all a merge
needs for later messages to carry the surviving user id; erasing a person must also reach the traces (tracing) and
the inbox copies (ingress) of their messages, which only other services hold, so those go first and a failure keeps
the user for a retry.

Visibility: a user or session belongs to its `instance_name` (a merged user to the instance of the survivor); a key
scoped to another instance gets NOT_FOUND, as for a user that does not exist.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Protocol

from servicekit.errors import FieldViolation, InvalidArgumentError, NotFoundError, OmniError, UnavailableError
from servicekit.principals import Principal
from services.router.core.ports import Clock

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


@dataclass(frozen=True)
class ExternalIdRecord:
    """One id under which an instance's channel knows a user."""

    instance_name: str
    channel: str
    external_id: str


@dataclass(frozen=True)
class SessionRecord:
    """One chat's conversation."""

    id: str
    instance_name: str
    chat_id: str
    channel: str
    session_name: str
    user_id: str
    created_at: float
    last_message_at: float
    message_count: int
    agent_session_id: str = ""
    agent_user_id: str = ""


@dataclass(frozen=True)
class UserRecord:
    """One person; `external_ids` and `sessions` are filled only when the user is read on its own."""

    id: str
    instance_name: str
    channel: str
    identity: str
    display_name: str
    phone_number: str
    created_at: float
    last_seen_at: float
    message_count: int
    external_ids: tuple[ExternalIdRecord, ...] = ()
    sessions: tuple[SessionRecord, ...] = ()


@dataclass(frozen=True)
class UserFilter:
    """What ListUsers narrows on; empty fields do not filter."""

    instance_name: str = ""
    channel: str = ""
    external_id: str = ""
    search: str = ""


@dataclass(frozen=True)
class Page:
    """A page request: at most `limit` rows after skipping `offset`."""

    limit: int = DEFAULT_PAGE_SIZE
    offset: int = 0


@dataclass(frozen=True)
class Erasure:
    """What erasing a user removed."""

    sessions_deleted: int = 0
    traces_deleted: int = 0
    inbox_messages_deleted: int = 0


@dataclass
class _InstanceFootprint:
    """A user's ids and chats on one instance: what the other services erase by."""

    sender_ids: list[str] = field(default_factory=list)
    chat_ids: list[str] = field(default_factory=list)
    direct_session_ids: list[str] = field(default_factory=list)


class UsersStore(Protocol):
    """The users and sessions tables (users_store.py). These ports live here, not in ports.py, because only this
    module uses them and their records are defined here."""

    async def list_users(self, where: UserFilter, page: Page) -> tuple[list[UserRecord], int]: ...

    async def get_user(self, user_id: str) -> UserRecord | None:
        """The user with its external ids and sessions, or None."""
        ...

    async def merge_users(self, user_id: str, other_user_id: str) -> bool:
        """Move the other user's identities, sessions, routes and counts to the user, then delete the other;
        False when the other user no longer exists."""
        ...

    async def delete_user(self, user_id: str) -> int:
        """Delete the user, its identities, sessions and route records; returns the sessions deleted."""
        ...

    async def list_sessions(self, instance_name: str, user_id: str, page: Page) -> tuple[list[SessionRecord], int]: ...

    async def get_session(self, session_id: str) -> SessionRecord | None: ...

    async def reset_session(self, session_id: str, new_id: str, now: float) -> SessionRecord | None:
        """Give the session `new_id` and restart its counters; None when it does not exist."""
        ...


class UserEraser(Protocol):
    """The other services' part of erasing a person (the gRPC adapter is `GrpcUserEraser` in users_servicer.py)."""

    async def erase_traces(self, instance_name: str, sender_ids: list[str], session_ids: list[str]) -> int:
        """Delete the traces of the person's messages on the instance; returns how many."""
        ...

    async def erase_inbox(self, instance_name: str, chat_ids: list[str], sender_ids: list[str]) -> int:
        """Delete the person's inbox rows on the instance; returns how many."""
        ...


def parse_page(page_size: int, page_token: str) -> Page:
    """The page a request asks for; a bad size or token is INVALID_ARGUMENT (a 400), never a silent default."""
    if page_size < 0 or page_size > MAX_PAGE_SIZE:
        raise InvalidArgumentError(
            "bad page size", violations=[FieldViolation("page_size", f"must be between 1 and {MAX_PAGE_SIZE}")]
        )
    offset = 0
    if page_token:
        if not page_token.isdigit():
            raise InvalidArgumentError(
                "bad page token", violations=[FieldViolation("page_token", "must be a token from a previous page")]
            )
        offset = int(page_token)
    return Page(limit=page_size or DEFAULT_PAGE_SIZE, offset=offset)


def next_token(page: Page, returned: int, total: int) -> str:
    """The token of the page after `page`, "" when it was the last."""
    following = page.offset + returned
    return str(following) if returned and following < total else ""


class UsersService:
    """The operations of UsersService, with the caller's scope applied."""

    def __init__(self, store: UsersStore, eraser: UserEraser | None = None, *, clock: Clock) -> None:
        self._store = store
        self._eraser = eraser
        self._clock = clock

    async def list_users(self, caller: Principal, where: UserFilter, page: Page) -> tuple[list[UserRecord], int]:
        """A page of users and the number matching; a scoped key is held to its own instance."""
        if caller.is_scoped:
            if where.instance_name and where.instance_name != caller.instance_name:
                return [], 0
            where = UserFilter(caller.instance_name, where.channel, where.external_id, where.search)
        return await self._store.list_users(where, page)

    async def get_user(self, caller: Principal, user_id: str) -> UserRecord:
        """The user with its external ids and sessions."""
        user = await self._store.get_user(user_id)
        if user is None or not caller.reaches(user.instance_name):
            raise NotFoundError(f"user {user_id!r} not found", reason="USER_NOT_FOUND")
        return user

    async def link_users(self, caller: Principal, user_id: str, other_user_id: str) -> UserRecord:
        """Merge `other_user_id` into `user_id`; across instances only the admin may."""
        if not other_user_id:
            raise InvalidArgumentError(
                "the user to link is missing", violations=[FieldViolation("user_id", "is required")]
            )
        if user_id == other_user_id:
            raise InvalidArgumentError(
                "a user cannot be linked to itself", violations=[FieldViolation("user_id", "must be another user")]
            )
        survivor = await self.get_user(caller, user_id)
        merged = await self.get_user(caller, other_user_id)
        if survivor.instance_name != merged.instance_name:
            caller.require_admin()
        if not await self._store.merge_users(survivor.id, merged.id):
            raise NotFoundError(f"user {other_user_id!r} not found", reason="USER_NOT_FOUND")
        return await self.get_user(caller, user_id)

    async def delete_user(self, caller: Principal, user_id: str) -> Erasure:
        """Erase the user everywhere: other services first (a failure keeps the user), then the router's rows."""
        user = await self.get_user(caller, user_id)
        traces = inbox = 0
        if self._eraser is not None:
            for instance_name, footprint in _footprints(user).items():
                try:
                    traces += await self._eraser.erase_traces(
                        instance_name, footprint.sender_ids, footprint.direct_session_ids
                    )
                    inbox += await self._eraser.erase_inbox(instance_name, footprint.chat_ids, footprint.sender_ids)
                except OmniError as exc:
                    raise UnavailableError(f"could not erase the user's messages: {exc.message}") from None
        sessions = await self._store.delete_user(user.id)
        return Erasure(sessions_deleted=sessions, traces_deleted=traces, inbox_messages_deleted=inbox)

    async def list_sessions(
        self, caller: Principal, instance_name: str, user_id: str, page: Page
    ) -> tuple[list[SessionRecord], int]:
        """A page of sessions and the number matching; a scoped key is held to its own instance."""
        if caller.is_scoped:
            if instance_name and instance_name != caller.instance_name:
                return [], 0
            instance_name = caller.instance_name
        return await self._store.list_sessions(instance_name, user_id, page)

    async def get_session(self, caller: Principal, session_id: str) -> SessionRecord:
        """One session."""
        session = await self._store.get_session(session_id)
        if session is None or not caller.reaches(session.instance_name):
            raise NotFoundError(f"session {session_id!r} not found", reason="SESSION_NOT_FOUND")
        return session

    async def reset_session(self, caller: Principal, session_id: str) -> SessionRecord:
        """Give the chat a new session id, so its next message starts a new conversation with the agent."""
        await self.get_session(caller, session_id)
        reset = await self._store.reset_session(session_id, str(uuid.uuid4()), self._clock())
        if reset is None:  # reset or erased by another call in between
            raise NotFoundError(f"session {session_id!r} not found", reason="SESSION_NOT_FOUND")
        return reset


def _footprints(user: UserRecord) -> dict[str, _InstanceFootprint]:
    """The user's ids, chats and one-to-one sessions per instance.

    Only one-to-one sessions (whose chat is one of the user's own ids) have their traces erased whole; in a group
    only the user's own messages go, found by sender id, so nobody else's data is touched."""
    footprints: dict[str, _InstanceFootprint] = defaultdict(_InstanceFootprint)
    own_ids: dict[str, set[str]] = defaultdict(set)
    for external in user.external_ids:
        footprints[external.instance_name].sender_ids.append(external.external_id)
        own_ids[external.instance_name].add(external.external_id)
    for session in user.sessions:
        footprint = footprints[session.instance_name]
        footprint.chat_ids.append(session.chat_id)
        if session.chat_id in own_ids[session.instance_name]:
            footprint.direct_session_ids.append(session.id)
    return dict(footprints)
