"""In-process fan-out of instance changes to WatchInstances streams.

Each watcher gets its own bounded queue. A watcher that cannot keep up is cut off rather than allowed to block
writers or grow memory: its stream ends with UNAVAILABLE, it reconnects, and the fresh snapshot it receives
replaces whatever it missed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

from servicekit.errors import UnavailableError
from services.router.core.models import InstanceChange


class Subscription:
    """One watcher's queue of changes."""

    def __init__(self, maxsize: int) -> None:
        self._queue: asyncio.Queue[InstanceChange | None] = asyncio.Queue(maxsize=maxsize)
        self.overflowed = False

    def offer(self, change: InstanceChange) -> None:
        """Enqueue without waiting; on overflow drop everything and leave a single end-of-stream marker."""
        if self.overflowed:
            return
        try:
            self._queue.put_nowait(change)
        except asyncio.QueueFull:
            self.overflowed = True
            while not self._queue.empty():
                self._queue.get_nowait()
            self._queue.put_nowait(None)

    async def next(self) -> InstanceChange:
        """The next change; raises `UnavailableError` when this watcher fell behind."""
        change = await self._queue.get()
        if change is None:
            raise UnavailableError("instance watch fell behind; reconnect to get a fresh snapshot", retry_after=0.1)
        return change


class InstanceBroadcaster:
    """Publishes every instance change made through this process to the current watchers."""

    def __init__(self, queue_size: int = 1000) -> None:
        self._queue_size = queue_size
        self._subscribers: set[Subscription] = set()

    @property
    def watcher_count(self) -> int:
        return len(self._subscribers)

    @contextmanager
    def subscribe(self) -> Iterator[Subscription]:
        """A subscription for the duration of the block (removed even when the watcher is cancelled)."""
        subscription = Subscription(self._queue_size)
        self._subscribers.add(subscription)
        try:
            yield subscription
        finally:
            self._subscribers.discard(subscription)

    def publish(self, change: InstanceChange) -> None:
        for subscription in list(self._subscribers):
            subscription.offer(change)
