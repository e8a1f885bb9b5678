"""Delivery receipts: `messages.update` events for messages the hub sent, as WhatsApp reports them through Evolution
(evolution/CONTRACT.md §3, 2.3.7 shape: `{keyId, remoteJid, fromMe, status, instanceId, messageId}`).

Off unless asked: a test calls `deliver` for one sent message, or turns `auto_statuses` on so every send is followed
by its receipts. Benchmarks and the other tests keep their traffic. Like the real server, a receipt is only posted
to an instance webhook subscribed to `MESSAGES_UPDATE`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from simulators.evolution.state import EvolutionState, Instance, SentMessage
from simulators.evolution.webhooks import WebhookDelivery

MESSAGES_UPDATE = "messages.update"
RECEIPT_STATUSES = ("SERVER_ACK", "DELIVERY_ACK", "READ", "PLAYED")
"""The statuses a sent message goes through (§3); `ERROR` is possible too."""
DEFAULT_STATUSES = ("DELIVERY_ACK", "READ")


def receipt_data(instance: Instance, sent: SentMessage, status: str) -> dict[str, Any]:
    """The `data` of one receipt: `keyId` is the WhatsApp id the send answered, `messageId` Evolution's row id."""
    return {
        "keyId": sent.key_id,
        "remoteJid": sent.remote_jid,
        "fromMe": True,
        "status": status,
        "instanceId": instance.instance_id,
        "messageId": sent.record_id,
    }


class ReceiptEmitter:
    """Posts receipts of sent messages, on demand or after every send (`auto_statuses`)."""

    def __init__(self, state: EvolutionState, webhooks: WebhookDelivery) -> None:
        self._state = state
        self._webhooks = webhooks
        self.auto_statuses: tuple[str, ...] = ()
        """Statuses posted (in order) after every send; empty (the default) posts none."""
        self._tasks: set[asyncio.Task[list[int | None]]] = set()

    async def deliver(self, key_id: str, statuses: Sequence[str] = DEFAULT_STATUSES) -> list[int | None]:
        """Post one receipt per status, in order, for the sent message `key_id`; returns each POST's HTTP status
        (None when the webhook is not subscribed to `messages.update` or the POST failed). KeyError for an id the
        simulator never sent."""
        sent = next((s for s in reversed(self._state.sent) if s.key_id == key_id), None)
        if sent is None:
            raise KeyError(f"no sent message with key id {key_id!r}")
        instance = self._state.instances[sent.instance]
        return [
            await self._webhooks.emit_and_wait(instance, MESSAGES_UPDATE, receipt_data(instance, sent, status))
            for status in statuses
        ]

    def after_send(self, instance: Instance, sent: SentMessage) -> None:
        """The send pipeline's hook: with `auto_statuses` set, post them in the background (never delaying the
        REST answer)."""
        if not self.auto_statuses:
            return
        task = asyncio.get_running_loop().create_task(self.deliver(sent.key_id, self.auto_statuses))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Cancel receipts still being posted."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
