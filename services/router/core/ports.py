"""What the router core needs from the outside, as protocols (implemented by adapters, faked in tests)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from services.router.core.models import OutgoingMessage

Clock = Callable[[], float]
"""Returns the current time in epoch seconds."""


class ChannelSender(Protocol):
    """The channels service as the router uses it."""

    async def send(self, message: OutgoingMessage) -> list[str]:
        """Send every part in order; returns the channel message ids.

        Raises `FailedPreconditionError` when the channel refused a part for good, `UnavailableError` (or
        `DeadlineExceededError`) when it failed transiently and the same key may be retried.
        """
        ...

    async def composing(self, instance_name: str, chat_id: str) -> None:
        """Best-effort typing indicator; never raises."""
        ...
