"""Retention sweeps: delete what a service no longer needs, once at start and then every interval, in the background.

Every table that grows with each message needs one: the tracing service's traces, and the delivery records of
ingress (inbox), router (routes) and channels (outbox). A sweep deletes in small batches so that a large backlog
of old rows never holds the database (or, on SQLite, the event loop) for long.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from servicekit.database import Database
from servicekit.settings import MeshSettings
from servicekit.tasks import cancel_and_wait

log = logging.getLogger(__name__)

PURGE_BATCH = 500
"""Rows one DELETE statement removes at most; between two statements the event loop serves other work."""


class RetentionTask:
    """Runs `sweep()` now and every `interval_seconds` until stopped. A failed sweep is logged and retried at the
    next interval, so a database hiccup never stops the service."""

    def __init__(self, what: str, sweep: Callable[[], Awaitable[int]], *, interval_seconds: float = 3600.0) -> None:
        self._what = what
        self._sweep = sweep
        self._interval = interval_seconds
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the background loop (its first sweep runs immediately)."""
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name=f"retention-{self._what}")

    async def stop(self) -> None:
        """Cancel the loop and wait for it to finish."""
        await cancel_and_wait(self._task)
        self._task = None

    async def run_once(self) -> int:
        """One sweep; returns how many rows (or traces) it deleted."""
        deleted = await self._sweep()
        if deleted:
            log.info("retention: deleted %d %s", deleted, self._what)
        return deleted

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception:
                log.exception("retention sweep of %s failed", self._what)
            await asyncio.sleep(self._interval)


def delivery_retention(
    what: str,
    purge: Callable[[float], Awaitable[int]],
    settings: MeshSettings,
    *,
    clock: Callable[[], float] = time.time,
) -> RetentionTask:
    """The sweep of one service's finished delivery records: `purge(cutoff)` deletes those created before `cutoff`
    (epoch seconds); nothing is deleted when `delivery_retention_days` is 0."""

    async def sweep() -> int:
        days = settings.delivery_retention_days
        return await purge(clock() - days * 86_400) if days > 0 else 0

    return RetentionTask(what, sweep, interval_seconds=settings.delivery_retention_interval_seconds)


async def delete_in_batches(db: Database, sql: str, *args: object) -> int:
    """Run a DELETE whose last parameter is a batch size (`LIMIT $n` in its sub-select) until it deletes fewer
    rows than that; returns the total deleted."""
    total = 0
    while True:
        deleted = await db.execute(sql, *args, PURGE_BATCH)
        total += deleted
        if deleted < PURGE_BATCH:
            return total
        await asyncio.sleep(0)
