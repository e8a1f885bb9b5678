"""The Omni API's directory reads (contacts and chats): paging, searching, chat types and a short-lived cache.

Channel gateways list an account's contacts and chats without totals or cursors that survive growth (Evolution's
findContacts answers one array; Slack's users.list has only forward cursors), yet the Omni API promises pages with a
`total_count`. So the whole list is fetched once, kept in memory a short while (`ExpiringCache`), and paged here:
a client walking 10,000 contacts page by page costs one gateway request per instance and minute, not one per page.
Lists are kept in an order where new entries come last (see the senders), so paging while the list grows neither
loses nor repeats an entry. No gRPC here: the servicer maps these results to protos.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from servicekit.errors import (
    FailedPreconditionError,
    FieldViolation,
    InvalidArgumentError,
    NotFoundError,
    OmniError,
    UnavailableError,
)
from servicekit.instances import Instance
from services.channels.core.senders.base import (
    ChannelError,
    ChannelRejectedError,
    ChannelSender,
    ChannelTransientError,
    Chat,
    Contact,
    DirectorySender,
)

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
CHAT_TYPES = frozenset({"direct", "group", "channel"})

_GROUP_SUFFIX = "@g.us"
_PERSON_SUFFIXES = ("@s.whatsapp.net", "@c.us", "@lid")
_PHONE_SUFFIXES = ("@s.whatsapp.net", "@c.us")
_CHANNEL_SUFFIXES = ("@newsletter", "@broadcast")
_PHONE_PUNCTUATION = re.compile(r"[\s+()\-.]")

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def chat_type_of(jid: str) -> str:
    """direct, group or channel, from the JID's server: `@g.us` is a group; `@newsletter` and `@broadcast` (a
    WhatsApp channel, a broadcast list or the status feed) are channels; anything else is a person."""
    lowered = jid.lower()
    if lowered.endswith(_GROUP_SUFFIX):
        return "group"
    if lowered.endswith(_CHANNEL_SUFFIXES):
        return "channel"
    return "direct"


def phone_number_of(jid: str) -> str:
    """`+<digits>` of a phone-addressed JID (`…@s.whatsapp.net`, with any `:device` suffix dropped); empty for a LID,
    a group or a channel, whose user part is not a phone number."""
    user, _, server = jid.partition("@")
    if "@" + server.lower() not in _PHONE_SUFFIXES:
        return ""
    digits = user.split(":", 1)[0]
    return f"+{digits}" if digits.isdigit() else ""


def is_person_jid(jid: str) -> bool:
    """Whether a JID addresses one person (a phone JID or a LID)."""
    return jid.lower().endswith(_PERSON_SUFFIXES)


def jid_for(identifier: str) -> str:
    """The JID an API caller meant: a JID is kept, a phone number (`+55 21 99123-4567`, digits) becomes the phone
    JID, so `/contacts/+5521991234567` finds the contact listed as `5521991234567@s.whatsapp.net`."""
    if "@" in identifier:
        return identifier
    digits = _PHONE_PUNCTUATION.sub("", identifier)
    return f"{digits}@s.whatsapp.net" if digits.isdigit() else identifier


@dataclass(frozen=True)
class Needle:
    """A normalized search: the case-folded text, and its digits when it reads as a phone number (so "+55 21 9912"
    finds "+5521991234567")."""

    text: str
    digits: str = ""

    @classmethod
    def of(cls, search: str) -> Needle | None:
        """None for an empty search (everything matches)."""
        text = search.strip().casefold()
        if not text:
            return None
        compact = _PHONE_PUNCTUATION.sub("", text)
        return cls(text=text, digits=compact if compact.isdigit() else "")

    def found_in(self, *fields: str) -> bool:
        """Whether any field contains the needle (case-insensitively, or by digits for a phone search)."""
        for value in fields:
            if not value:
                continue
            if self.text in value.casefold():
                return True
            if self.digits and self.digits in _PHONE_PUNCTUATION.sub("", value):
                return True
        return False


def contact_matches(contact: Contact, needle: Needle | None) -> bool:
    """A contact matches on its name, phone number, id or email."""
    return needle is None or needle.found_in(contact.name, contact.phone_number, contact.id, contact.email)


def chat_matches(chat: Chat, needle: Needle | None, chat_type: str = "") -> bool:
    """A chat matches on its name or id, and on its type when one is asked for."""
    if chat_type and chat.chat_type != chat_type:
        return False
    return needle is None or needle.found_in(chat.name, chat.id)


def page_bounds(page: int, page_size: int) -> tuple[int, int]:
    """The 1-based page and its size, defaulted (page 1, 50 items) and capped at `MAX_PAGE_SIZE`."""
    return max(page, 1), min(page_size if page_size > 0 else DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def page_of(items: Sequence[T], page: int, page_size: int) -> tuple[list[T], int]:
    """The items of one page (empty past the end) and the total count across pages."""
    page, page_size = page_bounds(page, page_size)
    start = (page - 1) * page_size
    return list(items[start : start + page_size]), len(items)


class ExpiringCache(Generic[K, V]):
    """Values kept `ttl_seconds` per key, loaded once however many callers miss at the same time (single flight).

    A load runs as its own task and callers wait on it shielded, so a caller that gives up (a gRPC deadline) does
    not cancel the load the others share, and its result still fills the cache for the next request. A failed load
    is not kept: the next request tries again. At most `max_entries` keys are kept, the least recently loaded go.
    """

    def __init__(
        self, ttl_seconds: float, *, max_entries: int = 256, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._ttl = ttl_seconds
        self._max_entries = max_entries
        self._clock = clock
        self._values: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._loading: dict[K, asyncio.Task[V]] = {}

    async def get(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        """The fresh value of `key`, loading it with `load` when missing or expired (shared by concurrent callers)."""
        kept = self._values.get(key)
        if kept is not None and self._clock() - kept[0] < self._ttl:
            return kept[1]
        task = self._loading.get(key)
        if task is None:
            task = asyncio.ensure_future(self._load(key, load))
            self._loading[key] = task
            task.add_done_callback(lambda done: self._finished(key, done))
        return await asyncio.shield(task)

    def forget(self, key: K) -> None:
        """Drop a kept value (a load in flight still completes and is kept)."""
        self._values.pop(key, None)

    async def _load(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        value = await load()
        self._values[key] = (self._clock(), value)
        self._values.move_to_end(key)
        while len(self._values) > self._max_entries:
            self._values.popitem(last=False)
        return value

    def _finished(self, key: K, task: asyncio.Task[V]) -> None:
        if self._loading.get(key) is task:
            del self._loading[key]
        if not task.cancelled():
            task.exception()  # retrieved: a failure nobody awaited any more is not logged as "never retrieved"


# ---------------------------------------------------------------------------------------------- use cases
# The core's ListContacts/GetContact/ListChats/GetChat, given the instance and its sender: the sender fetches (and
# caches), these filter, page and turn the channel's failures into the API's errors.

REASON_CONTACTS_NOT_LISTED = "CONTACTS_NOT_LISTED"
REASON_CHATS_NOT_LISTED = "CHATS_NOT_LISTED"
REASON_CONTACT_NOT_FOUND = "CONTACT_NOT_FOUND"
REASON_CHAT_NOT_FOUND = "CHAT_NOT_FOUND"
REASON_CHANNEL_UNAVAILABLE = "CHANNEL_UNAVAILABLE"


def _channel_failure(instance: Instance, exc: ChannelError, what: str) -> OmniError:
    """A failed read as the API's error: the channel refused (a bad key, an unknown Evolution instance) or could not
    be reached. Both carry a CHANNEL_/EVOLUTION_ reason, which the gateway answers 502 (the gateway downstream
    failed, not the request); a misconfigured instance stays a 409 the operator can fix."""
    message = f"{instance.channel} did not {what}: {exc.message}"
    if isinstance(exc, ChannelRejectedError):
        return FailedPreconditionError(message, reason=exc.reason)
    retry_after = exc.retry_after if isinstance(exc, ChannelTransientError) else None
    return UnavailableError(message, reason=REASON_CHANNEL_UNAVAILABLE, retry_after=retry_after)


def _required_id(value: str, field: str) -> str:
    value = value.strip()
    if not value:
        raise InvalidArgumentError(f"{field} is required", violations=[FieldViolation(field, "required")])
    return value


async def list_contacts_page(
    sender: ChannelSender, instance: Instance, *, page: int, page_size: int, search: str = ""
) -> tuple[list[Contact], int]:
    """One page of the instance's contacts matching `search`, and how many match in all."""
    try:
        contacts = await sender.list_contacts(instance)
    except ChannelError as exc:
        raise _channel_failure(instance, exc, "list the contacts") from None
    if contacts is None:
        raise FailedPreconditionError(
            f"contacts of a {instance.channel} instance are not listed yet", reason=REASON_CONTACTS_NOT_LISTED
        )
    needle = Needle.of(search)
    matching = contacts if needle is None else [c for c in contacts if contact_matches(c, needle)]
    return page_of(matching, page, page_size)


async def find_contact(sender: ChannelSender, instance: Instance, contact_id: str) -> Contact:
    """One contact by the list's id: asked of the channel when it can look one up, else found in its list."""
    contact_id = _required_id(contact_id, "id")
    try:
        if isinstance(sender, DirectorySender):
            found = await sender.find_contact(instance, contact_id)
        else:
            contacts = await sender.list_contacts(instance)
            if contacts is None:
                raise FailedPreconditionError(
                    f"contacts of a {instance.channel} instance are not listed yet", reason=REASON_CONTACTS_NOT_LISTED
                )
            found = next((c for c in contacts if c.id == contact_id), None)
    except ChannelError as exc:
        raise _channel_failure(instance, exc, "look the contact up") from None
    if found is None:
        raise NotFoundError(f"contact {contact_id!r} not found", reason=REASON_CONTACT_NOT_FOUND)
    return found


def _chat_lister(sender: ChannelSender, instance: Instance) -> DirectorySender:
    if not isinstance(sender, DirectorySender):
        raise FailedPreconditionError(
            f"a {instance.channel} instance has no chat list (its channels are at /channels)",
            reason=REASON_CHATS_NOT_LISTED,
        )
    return sender


async def list_chats_page(
    sender: ChannelSender, instance: Instance, *, page: int, page_size: int, search: str = "", chat_type: str = ""
) -> tuple[list[Chat], int]:
    """One page of the instance's chats matching `search` and `chat_type`, and how many match in all."""
    chat_type = chat_type.strip().lower()
    if chat_type and chat_type not in CHAT_TYPES:
        raise InvalidArgumentError(
            f"unknown chat_type {chat_type!r}",
            violations=[FieldViolation("chat_type", "must be direct, group or channel")],
        )
    lister = _chat_lister(sender, instance)
    try:
        chats = await lister.list_chats(instance)
    except ChannelError as exc:
        raise _channel_failure(instance, exc, "list the chats") from None
    needle = Needle.of(search)
    matching = chats if needle is None and not chat_type else [c for c in chats if chat_matches(c, needle, chat_type)]
    return page_of(matching, page, page_size)


async def find_chat(sender: ChannelSender, instance: Instance, chat_id: str) -> Chat:
    """One chat by the list's id, asked of the channel now."""
    chat_id = _required_id(chat_id, "id")
    lister = _chat_lister(sender, instance)
    try:
        found = await lister.find_chat(instance, chat_id)
    except ChannelError as exc:
        raise _channel_failure(instance, exc, "look the chat up") from None
    if found is None:
        raise NotFoundError(f"chat {chat_id!r} not found", reason=REASON_CHAT_NOT_FOUND)
    return found
