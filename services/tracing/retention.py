"""The retention sweep: deletes old traces once at start and then every interval, in the background."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from services.tracing.core import TracingCore

log = logging.getLogger(__name__)


class RetentionTask:
    """Runs `core.purge(retention_days)` now and every `interval_seconds` until stopped. A failed sweep is logged
    and retried at the next interval, so a database hiccup never stops the service."""

    def __init__(self, core: TracingCore, *, retention_days: float, interval_seconds: float = 3600.0) -> None:
        self._core = core
        self._retention_days = retention_days
        self._interval = interval_seconds
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the background loop (its first sweep runs immediately)."""
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="tracing-retention")

    async def stop(self) -> None:
        """Cancel the loop and wait for it to finish."""
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def run_once(self) -> int:
        """One sweep; returns the number of traces deleted."""
        deleted = await self._core.purge(self._retention_days)
        if deleted:
            log.info("retention: deleted %d traces older than %s days", deleted, self._retention_days)
        return deleted

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception:
                log.exception("retention sweep failed")
            await asyncio.sleep(self._interval)
