"""What the router core needs from the outside, as protocols (implemented by adapters, faked in tests)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from servicekit.instances import Instance
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


class AccountChecker(Protocol):
    """The channels service's CheckAccount, as instance creation uses it."""

    async def check(self, instance: Instance) -> None:
        """Return when the channel accepts the instance's credentials (or checks none); raise
        `InvalidArgumentError` with the channel's reason when it refuses them, `UnavailableError` when it cannot
        be asked."""
        ...
