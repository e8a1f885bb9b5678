"""Keeping a replica's in-memory copy in step with the database by polling one version counter.

Several services hold things in memory that other replicas can change (a router's access rules, its cached user and
session ids). Rather than a query per message, or a message bus the deployment would have to run, every change bumps
a one-row version counter in the same transaction, and each replica reads that counter every `poll_seconds` and
reloads (or forgets) when it moved: a change reaches every replica within one period, for one tiny query per period.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from servicekit.tasks import cancel_and_wait

log = logging.getLogger(__name__)


class VersionPoller:
    """Calls `on_change(version)` whenever `read_version()` answers a version it has not acted on yet."""

    def __init__(
        self,
        read_version: Callable[[], Awaitable[int]],
        on_change: Callable[[int], Awaitable[None]],
        *,
        poll_seconds: float,
        what: str,
    ) -> None:
        self._read_version = read_version
        self._on_change = on_change
        self._poll_seconds = poll_seconds
        self._what = what
        self._seen = -1
        self._task: asyncio.Task[None] | None = None

    async def check(self) -> bool:
        """Act on a new version, if there is one; True when there was. The version is read before `on_change`
        runs, so a change landing while it runs is caught by the next check rather than lost."""
        version = await self._read_version()
        if version == self._seen:
            return False
        await self._on_change(version)
        self._seen = version
        return True

    async def _poll(self) -> None:
        while True:
            try:
                await self.check()
            except Exception:  # a database hiccup keeps what is in memory; the next poll tries again
                log.warning("could not check the %s version", self._what, exc_info=True)
            await asyncio.sleep(self._poll_seconds)

    async def start(self) -> None:
        """Check once now (so the copy is current before the first use), then keep polling."""
        await self.check()
        if self._task is None:
            self._task = asyncio.create_task(self._poll())

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
