"""WhatsApp contacts and chats from Evolution (`POST /chat/findContacts` and `/chat/findChats`, its contract §4.5).

Evolution answers each with one array and no total, so a list is fetched whole, kept a minute per instance
(`directory.ExpiringCache`, one fetch shared by concurrent page requests) and paged by the core. The order is
ours, chosen so that growth only ever appends:
- contacts by Evolution's `createdAt`, then its row id: a contact saved while a client pages lands on the last page;
- chats by Evolution's row id, a cuid whose leading characters are its creation time, so chats also come in
  creation order (a recency order would move a chat to the front at each message and make pages skip and repeat;
  sort a page by `last_message_at` for a recent-first view).

Contacts are the people of the address book: rows of `type: "contact"` (or, from versions without `type`, any
person JID). Groups (`type: "group"`) are chats and are listed by the chat list with chat_type `group`; group
members (`type: "group_member"`) are participants of groups the account is in, not contacts it keeps, often only
a LID, and in large groups they would swamp the list. Both are left out.

Single reads (`contact`, `chat`) ask Evolution for that one JID, so an item created a second ago is found even
while the cached list is older.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any, TypeVar

import aiohttp

from servicekit.instances import Instance, WhatsAppConfig
from services.channels.core.directory import ExpiringCache, chat_type_of, is_person_jid, phone_number_of
from services.channels.core.evolution import EvolutionClient
from services.channels.core.senders.base import Chat, Contact

DIRECTORY_MAX_BYTES = 64 * 1024 * 1024
"""Largest findContacts/findChats answer read: a contact row is ~400 bytes, so about 150,000 contacts fit, far above
the 8 MiB cap of the other Evolution answers (10,000 contacts are ~4 MB)."""
DIRECTORY_TIMEOUT_SECONDS = 60.0
"""A whole address book can take Evolution a while; the fetch outlives a caller's deadline (the cache is shielded),
so a slow first read still fills the cache for the retry."""
CACHE_SECONDS = 60.0
"""How long a fetched list is reused: a new contact or chat shows in the lists within a minute."""

_CONTACT_TYPES = frozenset({"contact"})
_IGNORED_JIDS = frozenset({"status@broadcast"})
"""The status feed is not a conversation anyone can be written to."""

Entry = TypeVar("Entry", Contact, Chat)


class EvolutionDirectory:
    """Contacts and chats of WhatsApp instances, cached per instance and Evolution account."""

    def __init__(self, evolution: EvolutionClient, *, cache_seconds: float = CACHE_SECONDS) -> None:
        self._evolution = evolution
        self._contacts: ExpiringCache[tuple[str, ...], list[Contact]] = ExpiringCache(cache_seconds)
        self._chats: ExpiringCache[tuple[str, ...], list[Chat]] = ExpiringCache(cache_seconds)

    async def contacts(self, instance: Instance) -> list[Contact]:
        """Every address-book contact, oldest first (cached)."""

        async def fetch() -> list[Contact]:
            records = await self._find(instance, "chat/findContacts", {"where": {}})
            records.sort(key=_contact_order)
            return _unique([c for c in map(contact_from_record, records) if c is not None])

        return await self._contacts.get(_cache_key(instance), fetch)

    async def chats(self, instance: Instance) -> list[Chat]:
        """Every chat, in creation order (cached)."""

        async def fetch() -> list[Chat]:
            records = await self._find(instance, "chat/findChats", {"where": {}})
            records.sort(key=_chat_order)
            return _unique([c for c in map(chat_from_record, records) if c is not None])

        return await self._chats.get(_cache_key(instance), fetch)

    async def contact(self, instance: Instance, jid: str) -> Contact | None:
        """The contact of `jid`, asked of Evolution now."""
        records = await self._find(instance, "chat/findContacts", {"where": {"remoteJid": jid}})
        matching = [r for r in records if r.get("remoteJid") == jid]
        return next((c for c in map(contact_from_record, matching) if c is not None), None)

    async def chat(self, instance: Instance, jid: str) -> Chat | None:
        """The chat of `jid`, asked of Evolution now."""
        records = await self._find(instance, "chat/findChats", {"where": {"remoteJid": jid}})
        matching = [r for r in records if r.get("remoteJid") == jid]
        return next((c for c in map(chat_from_record, matching) if c is not None), None)

    async def _find(self, instance: Instance, action: str, body: dict[str, Any]) -> list[dict[str, Any]]:
        answer = await self._evolution.call(
            instance,
            "POST",
            action,
            body,
            timeout=aiohttp.ClientTimeout(total=DIRECTORY_TIMEOUT_SECONDS),
            max_bytes=DIRECTORY_MAX_BYTES,
        )
        return [r for r in answer if isinstance(r, dict)] if isinstance(answer, list) else []


def _cache_key(instance: Instance) -> tuple[str, ...]:
    """One cache entry per hub instance and Evolution account: an instance pointed at another server or given
    another key never reads the list fetched with the old ones (the key is hashed, not kept in clear)."""
    config = instance.config_of(WhatsAppConfig)
    key_digest = hashlib.sha256(config.evolution_key.encode()).hexdigest()[:16]
    return (instance.name, config.evolution_url, config.whatsapp_instance, key_digest)


def contact_from_record(record: dict[str, Any]) -> Contact | None:
    """A findContacts row as a contact; None for groups, group members, the status feed and rows without a JID."""
    jid = _text(record.get("remoteJid"))
    kind = record.get("type")
    if not jid or jid in _IGNORED_JIDS or not is_person_jid(jid):
        return None
    if kind is not None and kind not in _CONTACT_TYPES:
        return None
    return Contact(
        id=jid,
        name=_text(record.get("pushName")) or phone_number_of(jid) or jid,
        phone_number=phone_number_of(jid),
        avatar_url=_text(record.get("profilePicUrl")),
    )


def chat_from_record(record: dict[str, Any]) -> Chat | None:
    """A findChats row as a chat; None for the status feed and rows without a JID (a pushName change answers a row
    with only Evolution's id and the new name)."""
    jid = _text(record.get("remoteJid"))
    if not jid or jid in _IGNORED_JIDS:
        return None
    last = record.get("lastMessage") if isinstance(record.get("lastMessage"), dict) else {}
    timestamp = last.get("messageTimestamp") if last else None
    unread = record.get("unreadCount")
    return Chat(
        id=jid,
        name=_text(record.get("name")) or _text(record.get("pushName")) or phone_number_of(jid) or jid,
        chat_type=chat_type_of(jid),
        unread_count=unread if isinstance(unread, int) and unread > 0 else 0,
        last_message_at=float(timestamp) if isinstance(timestamp, (int, float)) and timestamp > 0 else None,
        avatar_url=_text(record.get("profilePicUrl")),
        last_message_text=_message_text(last.get("message")) if last else "",
    )


def _message_text(message: object) -> str:
    """The text of a stored message: plain, extended, or a media caption (enough for a chat list's preview)."""
    if not isinstance(message, dict):
        return ""
    if isinstance(message.get("conversation"), str):
        return str(message["conversation"])
    for kind in ("extendedTextMessage", "imageMessage", "videoMessage", "documentMessage"):
        content = message.get(kind)
        if isinstance(content, dict):
            text = content.get("text") or content.get("caption")
            if isinstance(text, str):
                return text
    return ""


def _contact_order(record: dict[str, Any]) -> tuple[float, str]:
    """Oldest first: Evolution's createdAt, then its row id; rows without a date first (they predate the column)."""
    return (_epoch(record.get("createdAt")), _text(record.get("id")))


def _chat_order(record: dict[str, Any]) -> tuple[str, str]:
    """Creation order: Evolution's row id is a cuid, whose leading characters encode its creation time."""
    return (_text(record.get("id")), _text(record.get("remoteJid")))


def _unique(items: list[Entry]) -> list[Entry]:
    """The first entry of each id: Evolution keeps one row per JID, but a LID and a phone row of one person, or two
    rows of a JID written by different versions, must not show one id twice in a list."""
    seen: set[str] = set()
    kept: list[Entry] = []
    for item in items:
        if item.id not in seen:
            seen.add(item.id)
            kept.append(item)
    return kept


def _epoch(value: object) -> float:
    if not isinstance(value, str) or not value:
        return 0.0
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""
