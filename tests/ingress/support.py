"""Fakes and builders shared by the ingress tests."""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from servicekit.messages import InboundMessage
from services.ingress.core.dispatcher import DispatchPolicy, RouteOutcome

OWN_JID = "5511987650000@s.whatsapp.net"


def upsert(
    key_id: str,
    *,
    chat: str = "5521991234567@s.whatsapp.net",
    text: str = "hello",
    ts: Any = 1764945130,
    from_me: bool = False,
    event: str = "messages.upsert",
    message: dict[str, Any] | None = None,
    key_extra: dict[str, Any] | None = None,
    data_extra: dict[str, Any] | None = None,
    envelope_extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A 2.3.7-shaped messages.upsert envelope."""
    key: dict[str, Any] = {"remoteJid": chat, "fromMe": from_me, "id": key_id, "participant": ""}
    key.update(key_extra or {})
    data: dict[str, Any] = {
        "key": key,
        "pushName": "Maria Souza",
        "status": "DELIVERY_ACK",
        "message": message if message is not None else {"conversation": text},
        "messageType": "conversation",
        "messageTimestamp": ts,
        "instanceId": "6f1c2a9e-3b7d-4e58-9a21-c4d8e0f7b513",
        "source": "android",
    }
    data.update(data_extra or {})
    envelope: dict[str, Any] = {
        "event": event,
        "instance": "acme-support",
        "data": data,
        "destination": "https://hub.example.com/webhooks/evolution/acme-support",
        "date_time": "2025-12-05T14:32:10.482Z",
        "sender": OWN_JID,
        "server_url": "https://evolution.example.com",
        "apikey": None,
    }
    envelope.update(envelope_extra or {})
    return envelope


def body(envelope: dict[str, Any]) -> bytes:
    return orjson.dumps(envelope)


def with_key(envelope: dict[str, Any], **key: Any) -> dict[str, Any]:
    """A deep copy of an envelope with key fields replaced (None removes the field)."""
    copied = copy.deepcopy(envelope)
    for name, value in key.items():
        if value is None:
            copied["data"]["key"].pop(name, None)
        else:
            copied["data"]["key"][name] = value
    return copied


@dataclass
class RouteCall:
    message: InboundMessage
    attempt: int
    final_attempt: bool
    started: float
    ended: float = 0.0


Behaviour = Callable[[InboundMessage, int], Awaitable[RouteOutcome]]


async def always_sent(message: InboundMessage, attempt: int) -> RouteOutcome:
    return RouteOutcome(outcome="sent")


@dataclass
class FakeRouter:
    """RouterPort with a configurable behaviour per call; records every call and the concurrency seen."""

    behaviour: Behaviour = always_sent
    calls: list[RouteCall] = field(default_factory=list)
    active: dict[str, int] = field(default_factory=dict)
    max_active_per_chat: int = 0
    active_total: int = 0
    max_active_total: int = 0

    async def route(
        self, message: InboundMessage, *, attempt: int, final_attempt: bool, timeout: float
    ) -> RouteOutcome:
        call = RouteCall(message, attempt, final_attempt, time.monotonic())
        self.calls.append(call)
        self.active[message.chat_id] = self.active.get(message.chat_id, 0) + 1
        self.active_total += 1
        self.max_active_per_chat = max(self.max_active_per_chat, self.active[message.chat_id])
        self.max_active_total = max(self.max_active_total, self.active_total)
        try:
            return await self.behaviour(message, attempt)
        finally:
            call.ended = time.monotonic()
            self.active[message.chat_id] -= 1
            self.active_total -= 1

    def ids(self) -> list[str]:
        return [c.message.id for c in self.calls]


FAST = DispatchPolicy(
    concurrency=64,
    route_deadline_seconds=5.0,
    max_attempts=8,
    retry_base_seconds=0.01,
    retry_max_seconds=0.05,
    lease_seconds=30.0,
    poll_interval_seconds=0.05,
)


async def eventually(predicate: Callable[[], Awaitable[bool]], *, timeout: float = 15.0) -> None:
    """Wait until `predicate()` is true, failing after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if await predicate():
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)
