"""Contacts and chats: `POST /chat/findContacts/{i}` and `POST /chat/findChats/{i}` (the contract's §4.5), plus the
test hooks that fill them (`EvolutionSimulator.seed_contacts`, `add_contact`, `add_chat`, `seed_chats`, or
`POST /__sim/contacts` and `/__sim/chats` out of process).

Like Evolution, both answer one JSON array with no total. findContacts takes `{where?: {remoteJid?, id?, pushName?},
page?, offset?}` (offset is the page size), findChats `{where?: {remoteJid?}, take?, skip?}`. Rows have the shapes of
the REST fixtures (`find-contacts.json`, `find-chats.json`). Evolution promises no order; the simulator answers the
most recently updated first, as findChats does, so a client that relies on the answer's order is caught.

Row ids are cuid-like (`c` + the creation time in base 36 + a counter), so they grow with creation time as
Prisma's cuids do; `createdAt` grows with them.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from simulators.evolution.rest import authorize, json_response, read_body, required
from simulators.evolution.state import EvolutionState
from simulators.evolution.wire import instance_uuid

_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"
CONTACT_TYPES = ("contact", "group", "group_member")


def _base36(value: int, width: int) -> str:
    digits = ""
    while value:
        value, rest = divmod(value, 36)
        digits = _BASE36[rest] + digits
    return digits.rjust(width, "0")[-width:]


def _iso(ms: int) -> str:
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


class _Clock:
    """Monotonic creation stamps: (milliseconds, cuid) pairs that never go backwards, even within one millisecond."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = 0
        self._counter = 0

    def stamp(self) -> tuple[int, str]:
        with self._lock:
            self._last_ms = max(self._last_ms, int(time.time() * 1000))
            self._counter += 1
            cuid = "c" + _base36(self._last_ms, 8) + _base36(self._counter, 6) + secrets.token_hex(5)
            return self._last_ms, cuid


def _where(body: dict[str, Any]) -> dict[str, Any]:
    where = body.get("where")
    return where if isinstance(where, dict) else {}


def _int(value: Any, default: int) -> int:
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        return default


class DirectoryBook:
    """The contacts and chats of each simulated instance, in creation order."""

    def __init__(self) -> None:
        self.contacts: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.chats: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self._clock = _Clock()
        self._seeded = 0

    def add_contact(
        self,
        instance: str,
        remote_jid: str,
        push_name: str | None = None,
        *,
        contact_type: str = "contact",
        profile_pic_url: str | None = None,
    ) -> dict[str, Any]:
        """Save one contact row (a `type: "group"` row for a `@g.us` JID unless told otherwise) and return it."""
        if contact_type not in CONTACT_TYPES:
            raise ValueError(f"contact_type must be one of {CONTACT_TYPES}")
        ms, cuid = self._clock.stamp()
        row = {
            "id": cuid,
            "remoteJid": remote_jid,
            "pushName": push_name,
            "profilePicUrl": profile_pic_url,
            "createdAt": _iso(ms),
            "updatedAt": _iso(ms),
            "instanceId": instance_uuid(instance),
            "isGroup": remote_jid.endswith("@g.us"),
            "isSaved": contact_type == "contact",
            "type": contact_type,
        }
        self.contacts[instance].append(row)
        return row

    def seed_contacts(self, instance: str, count: int, *, name_prefix: str = "Contact") -> list[dict[str, Any]]:
        """`count` phone contacts named `{name_prefix} {n}` with distinct numbers (55119 + 8 digits)."""
        rows = []
        for _ in range(count):
            self._seeded += 1
            number = f"55119{self._seeded:08d}"
            pic = f"https://pps.whatsapp.net/v/t61/{number}.jpg"
            rows.append(
                self.add_contact(
                    instance, f"{number}@s.whatsapp.net", f"{name_prefix} {self._seeded}", profile_pic_url=pic
                )
            )
        return rows

    def add_chat(
        self,
        instance: str,
        remote_jid: str,
        name: str | None = None,
        *,
        unread_count: int = 0,
        last_text: str | None = None,
        last_timestamp: int | None = None,
        profile_pic_url: str | None = None,
    ) -> dict[str, Any]:
        """Save one chat row, with a last message when `last_text` is given, and return it."""
        ms, cuid = self._clock.stamp()
        when = last_timestamp if last_timestamp is not None else ms // 1000
        last_message = None
        if last_text is not None:
            last_message = {
                "id": self._clock.stamp()[1],
                "key": {"remoteJid": remote_jid, "fromMe": False, "id": secrets.token_hex(10).upper()},
                "pushName": name,
                "participant": None,
                "messageType": "conversation",
                "message": {"conversation": last_text},
                "contextInfo": None,
                "source": "android",
                "messageTimestamp": when,
                "instanceId": instance_uuid(instance),
                "sessionId": None,
                "status": "DELIVERY_ACK",
            }
        row = {
            "id": cuid,
            "remoteJid": remote_jid,
            "pushName": name,
            "profilePicUrl": profile_pic_url,
            "updatedAt": _iso(when * 1000),
            "windowStart": _iso(ms),
            "windowExpires": _iso(ms + 86_400_000),
            "windowActive": False,
            "lastMessage": last_message,
            "unreadCount": unread_count,
            "isSaved": True,
        }
        self.chats[instance].append(row)
        return row

    def seed_chats(self, instance: str, count: int) -> list[dict[str, Any]]:
        """`count` direct chats, one with each of `count` new seeded numbers."""
        rows = []
        for _ in range(count):
            self._seeded += 1
            number = f"55219{self._seeded:08d}"
            rows.append(self.add_chat(instance, f"{number}@s.whatsapp.net", f"Chat {self._seeded}", last_text="oi"))
        return rows


def _newest_first(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda row: (row.get("updatedAt") or "", row["id"]), reverse=True)


class DirectoryEndpoints:
    """findContacts and findChats over a `DirectoryBook`, and the `/__sim/` hooks that fill it."""

    def __init__(self, state: EvolutionState, book: DirectoryBook) -> None:
        self._state = state
        self._book = book

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/chat/findContacts/{instance}", self._find_contacts),
            web.post("/chat/findChats/{instance}", self._find_chats),
            web.post("/__sim/contacts", self._seed_contacts),
            web.post("/__sim/chats", self._seed_chats),
        ]

    async def _find_contacts(self, request: web.Request) -> web.StreamResponse:
        instance = authorize(self._state, request)
        body = await read_body(request)
        where = _where(body)
        rows = self._book.contacts.get(instance.name, [])
        for field in ("remoteJid", "id"):
            if where.get(field):
                rows = [r for r in rows if r[field] == where[field]]
        if where.get("pushName"):
            rows = [r for r in rows if str(where["pushName"]) in (r["pushName"] or "")]
        rows = _newest_first(rows)
        if body.get("offset") is not None:
            size = _int(body["offset"], 50) or 50
            start = (max(_int(body.get("page"), 1), 1) - 1) * size
            rows = rows[start : start + size]
        return json_response(rows)

    async def _find_chats(self, request: web.Request) -> web.StreamResponse:
        instance = authorize(self._state, request)
        body = await read_body(request)
        where = _where(body)
        rows = self._book.chats.get(instance.name, [])
        if where.get("remoteJid"):
            rows = [r for r in rows if r["remoteJid"] == where["remoteJid"]]
        rows = _newest_first(rows)
        skip = _int(body.get("skip"), 0)
        take = _int(body.get("take"), 0) if body.get("take") is not None else None
        rows = rows[skip : skip + take] if take is not None else rows[skip:]
        return json_response(rows)

    async def _seed_contacts(self, request: web.Request) -> web.StreamResponse:
        """`{instance, count, name_prefix?}`: seed contacts; answers how many the instance has."""
        body = await read_body(request)
        required(body, "instance", "count")
        name = str(body["instance"])
        self._book.seed_contacts(name, _int(body["count"], 0), name_prefix=str(body.get("name_prefix") or "Contact"))
        return json_response({"instance": name, "contacts": len(self._book.contacts[name])}, 201)

    async def _seed_chats(self, request: web.Request) -> web.StreamResponse:
        """`{instance, count}`: seed direct chats; answers how many the instance has."""
        body = await read_body(request)
        required(body, "instance", "count")
        name = str(body["instance"])
        self._book.seed_chats(name, _int(body["count"], 0))
        return json_response({"instance": name, "chats": len(self._book.chats[name])}, 201)
