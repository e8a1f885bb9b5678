"""What the ingress core needs from storage, as protocols, so the core depends on no SQL (`storage.InboxStore` and
`storage.BotLeaseStore` implement them; tests use those on SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from services.ingress.core.inbox import BotLeaseRow, InboxRow, MediaBlob


class Inbox(Protocol):
    """The inbox: stored messages, their claims by dispatchers, their outcomes."""

    async def insert(self, row: InboxRow, blobs: Sequence[MediaBlob] = ()) -> str | None:
        """Store a new row, with the files its message names (`Media.blob_id`) in the same transaction; returns None
        when it was new, else the id of the row already stored for that message (and then stores no file)."""
        ...

    async def holds_any(self, instance_name: str, channel: str, channel_message_ids: Sequence[str]) -> bool:
        """True when the inbox has a row (any state) for one of these channel message ids of the instance."""
        ...

    async def list_dead(self, instance_name: str, limit: int, offset: int) -> tuple[list[InboxRow], int]:
        """One page of dead rows, newest first, and how many there are."""
        ...

    async def redeliver(self, message_id: str, now: float, instance_name: str = "") -> str | None:
        """Dead → received with a fresh attempt budget. Returns None on success, else the row's state ("" if none,
        or if it belongs to another instance than a non-empty `instance_name`)."""
        ...

    async def claim(self, replica_id: str, limit: int, now: float, lease_seconds: float) -> list[InboxRow]:
        """Lease up to `limit` due rows to `replica_id` (state dispatched, attempts + 1)."""
        ...

    async def renew_leases(self, replica_id: str, ids: Sequence[str], now: float, lease_seconds: float) -> int:
        """Extend the lease of the rows this replica is dispatching right now (a heartbeat while the router works)."""
        ...

    async def release_own_leases(self, replica_id: str, now: float) -> int:
        """Put back the rows this replica held when it last stopped, so a restart does not wait for the lease."""
        ...

    async def mark_handled(self, message_id: str, replica_id: str, outcome: str, now: float) -> bool: ...

    async def mark_retry(
        self, message_id: str, replica_id: str, next_attempt_at: float, error: str, now: float
    ) -> bool: ...

    async def mark_dead(self, message_id: str, replica_id: str, error: str, now: float) -> bool: ...

    async def purge_instance(self, instance_name: str) -> int:
        """Delete every row of the instance (dead letters included); returns how many."""
        ...


class MediaBlobs(Protocol):
    """The files kept apart from the inbox rows (`media_store`)."""

    async def get(self, instance_name: str, blob_id: str) -> MediaBlob | None:
        """The file, None when the instance has no such file."""
        ...

    async def purge_older_than(self, cutoff: float) -> int:
        """Delete the files stored before `cutoff` (epoch seconds); returns how many."""
        ...

    async def purge_instance(self, instance_name: str) -> int:
        """Delete every file of the instance; returns how many."""
        ...


class InstanceData(Protocol):
    """Any store that keeps rows per instance, all of which go when the instance is deleted."""

    async def purge_instance(self, instance_name: str) -> int:
        """Delete what is kept for the instance; returns how many rows went. Idempotent."""
        ...


class BotLeases(Protocol):
    """Which replica runs each hosted bot, and what its owner last reported."""

    async def acquire(self, instance_name: str, channel: str, owner: str, now: float, lease_seconds: float) -> bool:
        """Take (or keep) the bot's lease unless another owner's lease is still running."""
        ...

    async def renew(
        self, instance_name: str, owner: str, now: float, lease_seconds: float, state: str, detail: str, report: str
    ) -> bool:
        """Extend our lease and store the bot's report; False when the lease is no longer ours."""
        ...

    async def save_cursors(self, instance_name: str, owner: str, cursors: str) -> None:
        """Remember the newest message seen per chat, so a bot that restarts catches up from there."""
        ...

    async def release(self, instance_name: str, owner: str, now: float, state: str, detail: str) -> None:
        """Give the lease up (the bot stopped here); another replica may take it at once."""
        ...

    async def forget(self, keep: Sequence[str], now: float) -> int:
        """Delete the rows of bots whose instance is gone (not in `keep`) and that nobody runs any more (a replica whose
        instance cache is behind never removes a bot another replica has just started)."""
        ...

    async def get(self, instance_name: str) -> BotLeaseRow | None: ...

    async def list(self, instance_name: str = "") -> list[BotLeaseRow]: ...
