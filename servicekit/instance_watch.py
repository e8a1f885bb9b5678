"""A cache of instances kept fresh by the router's WatchInstances stream.

Reads are served from memory; a name not in the cache (or any name before the first snapshot arrived) is asked
of the router with GetInstance, so a freshly created instance works at once. The stream reconnects with back-off
and each reconnect replaces the cache with the new snapshot, so a deletion missed while disconnected is not kept.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping

import grpc
from omni.router.v1 import instance_pb2, router_service_pb2, router_service_pb2_grpc

from servicekit import errors
from servicekit.convert import instance_from_proto
from servicekit.grpc_clients import call
from servicekit.instances import Instance
from servicekit.tasks import cancel_and_wait

log = logging.getLogger(__name__)

InstancesListener = Callable[[Mapping[str, Instance]], None]
"""Called with every known instance after the snapshot and after each change (a bot host reconciles from it)."""


REFRESH_INTERVAL_SECONDS = 1.0
"""How often one instance may be re-read past the cache (strangers posting wrong secrets cost one read a second)."""
MAX_REFRESH_ENTRIES = 10_000


class WatchedInstanceDirectory:
    """`InstanceDirectory` backed by the router, cached and invalidated by its watch stream."""

    def __init__(self, stub: router_service_pb2_grpc.RouterServiceAsyncStub, *, rpc_timeout: float = 5.0) -> None:
        self._stub = stub
        self._rpc_timeout = rpc_timeout
        self._cache: dict[str, Instance] = {}
        self._synced = False
        self._generation = 0
        """Counts the stream's changes: a GetInstance answer read before a change is not cached after it (a delete
        that overtook it would otherwise be undone, and a recreated instance served with the old one's id)."""
        self._task: asyncio.Task[None] | None = None
        self._listeners: list[InstancesListener] = []
        self._refreshed_at: dict[str, float] = {}

    def listen(self, listener: InstancesListener) -> None:
        """Call `listener` with the whole cache once it is synced and after every change."""
        self._listeners.append(listener)

    def _changed(self) -> None:
        for listener in self._listeners:
            try:
                listener(self._cache)
            except Exception:
                log.exception("instance listener failed")

    def start(self) -> None:
        """Begin watching in the background."""
        self._task = asyncio.create_task(self._watch_forever(), name="instance-watch")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    async def refresh(self, name: str) -> Instance:
        """The instance read from the router now, bypassing the cache, at most once a second per name (else the cached
        one): for a webhook whose secret the cache does not know yet. A rotation registers the new secret with the
        channel before the watch stream brings it here, and a channel that is answered 401 drops the event (Evolution
        does not retry a 401), so a refusal is only final once checked against the router."""
        now = time.monotonic()
        if now - self._refreshed_at.get(name, -REFRESH_INTERVAL_SECONDS) < REFRESH_INTERVAL_SECONDS:
            return await self.get(name)
        if len(self._refreshed_at) > MAX_REFRESH_ENTRIES:
            self._refreshed_at.clear()
        self._refreshed_at[name] = now
        return await self._fetch(name)

    async def get(self, name: str) -> Instance:
        cached = self._cache.get(name)
        if cached is not None:
            return cached
        return await self._fetch(name)

    async def _fetch(self, name: str) -> Instance:
        """GetInstance, cached unless the watch stream changed something meanwhile."""
        generation = self._generation
        response = await call(
            self._stub.GetInstance,
            router_service_pb2.GetInstanceRequest(name=name, view=instance_pb2.INSTANCE_VIEW_WITH_SECRETS),
            timeout=self._rpc_timeout,
        )
        config = instance_from_proto(response.instance)
        if self._synced and generation == self._generation:
            self._cache[name] = config
        return config

    async def _watch_forever(self) -> None:
        delay = 0.2
        while True:
            try:
                await self._watch_once()
                delay = 0.2
            except asyncio.CancelledError:
                raise
            except (grpc.aio.AioRpcError, errors.OmniError) as exc:
                log.debug("instance watch interrupted: %s", exc)
            except Exception:
                log.exception("instance watch failed")
            self._synced = False
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _watch_once(self) -> None:
        snapshot: dict[str, Instance] = {}
        stream = self._stub.WatchInstances(router_service_pb2.WatchInstancesRequest())
        async for change in stream:
            kind = change.kind
            self._generation += 1
            if kind == instance_pb2.INSTANCE_CHANGE_KIND_SNAPSHOT:
                snapshot[change.instance.name] = instance_from_proto(change.instance)
            elif kind == instance_pb2.INSTANCE_CHANGE_KIND_SNAPSHOT_DONE:
                self._cache = snapshot
                self._synced = True
                self._changed()
            elif kind == instance_pb2.INSTANCE_CHANGE_KIND_UPSERTED:
                self._cache[change.instance.name] = instance_from_proto(change.instance)
                self._changed()
            elif kind == instance_pb2.INSTANCE_CHANGE_KIND_DELETED:
                self._cache.pop(change.instance.name, None)
                self._changed()
