"""Erasing a person's traces (EraseSender), when an operator deletes a user (the router's DeleteUser).

Decision: the traces are deleted, spans and all, rather than having their payload columns nulled. A trace's spans
carry the payloads as attributes too, and its summary keeps the sender id, chat and message type: nulling the
payload columns would leave personal data behind. The traces of a person's one-to-one sessions go whole; in a
group only the messages they sent (by sender id) go, so nobody else's traces are touched.

Spans of an erased trace may still be on their way (each service exports on its own schedule, and the OTLP exporters
retry): the erased trace ids are kept (until retention) and such spans are dropped on arrival, so an erasure is not
undone by a partial trace that reappears a second later. The erased senders and sessions are kept too, with the
erasure's time: a trace of theirs that tracing had none of yet (a message being handled while the erasure ran) is
erased when it arrives, if it started before the erasure; a message sent after it is a new one and stays. The
links from the erased messages' channel ids to their traces are kept too (ids only), so a receipt or an edit of one
of those messages (which names the chat, and an edit its new text) is dropped when it comes rather than kept waiting
for a trace that never will.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Protocol

from servicekit.errors import FieldViolation, InvalidArgumentError


class SenderTraces(Protocol):
    """The trace store as erasure needs it (storage.TraceStore)."""

    async def erase_sender(
        self, instance_name: str, sender_ids: Sequence[str], session_ids: Sequence[str], erased_at: float
    ) -> int: ...


async def erase_sender(
    store: SenderTraces,
    instance_name: str,
    sender_ids: Sequence[str],
    session_ids: Sequence[str],
    *,
    clock: Callable[[], float] = time.time,
) -> int:
    """Delete the traces of the person's messages on the instance; returns how many. Idempotent."""
    if not instance_name:
        raise InvalidArgumentError(
            "instance_name is required", violations=[FieldViolation("instance_name", "required")]
        )
    senders = [s for s in dict.fromkeys(sender_ids) if s]
    sessions = [s for s in dict.fromkeys(session_ids) if s]
    if not senders and not sessions:
        return 0
    return await store.erase_sender(instance_name, senders, sessions, clock())
