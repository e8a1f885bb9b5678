"""A cache of instances kept fresh by the router's WatchInstances stream.

Reads are served from memory; a name not in the cache (or any name before the first snapshot arrived) is asked
of the router with GetInstance, so a freshly created instance works at once. The stream reconnects with back-off
and each reconnect replaces the cache with the new snapshot, so a deletion missed while disconnected is not kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import grpc
from omni.common.v1 import channel_pb2
from omni.router.v1 import instance_pb2, router_service_pb2, router_service_pb2_grpc

from servicekit import errors
from servicekit.grpc_clients import call
from servicekit.instances import InstanceConfig

log = logging.getLogger(__name__)

CHANNEL_NAMES = {
    channel_pb2.CHANNEL_WHATSAPP: "whatsapp",
    channel_pb2.CHANNEL_DISCORD: "discord",
    channel_pb2.CHANNEL_SLACK: "slack",
}


def instance_from_proto(msg: instance_pb2.Instance) -> InstanceConfig:
    """The cache value of an Instance read WITH_SECRETS."""
    return InstanceConfig(
        name=msg.name,
        channel=CHANNEL_NAMES.get(msg.channel, "unspecified"),
        evolution_url=msg.evolution_url,
        evolution_key=msg.evolution_key.value,
        whatsapp_instance=msg.whatsapp_instance,
        discord_bot_token=msg.discord_bot_token.value,
        discord_client_id=msg.discord_client_id,
        discord_guild_id=msg.discord_guild_id,
        slack_bot_token=msg.slack_bot_token.value,
        slack_signing_secret=msg.slack_signing_secret.value,
        agent_api_url=msg.agent_api_url,
        agent_api_key=msg.agent_api_key.value,
        default_agent=msg.default_agent,
        agent_timeout_seconds=msg.agent_timeout_seconds or 60,
        enable_auto_split=msg.enable_auto_split,
        is_active=msg.is_active,
        fallback_text=msg.fallback_text,
        webhook_secret=msg.webhook_secret.value,
    )


class WatchedInstanceDirectory:
    """`InstanceDirectory` backed by the router, cached and invalidated by its watch stream."""

    def __init__(self, stub: router_service_pb2_grpc.RouterServiceAsyncStub, *, rpc_timeout: float = 5.0) -> None:
        self._stub = stub
        self._rpc_timeout = rpc_timeout
        self._cache: dict[str, InstanceConfig] = {}
        self._synced = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin watching in the background."""
        self._task = asyncio.create_task(self._watch_forever(), name="instance-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def get(self, name: str) -> InstanceConfig:
        cached = self._cache.get(name)
        if cached is not None:
            return cached
        response = await call(
            self._stub.GetInstance,
            router_service_pb2.GetInstanceRequest(name=name, view=instance_pb2.INSTANCE_VIEW_WITH_SECRETS),
            timeout=self._rpc_timeout,
        )
        config = instance_from_proto(response.instance)
        if self._synced:
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
        snapshot: dict[str, InstanceConfig] = {}
        stream = self._stub.WatchInstances(router_service_pb2.WatchInstancesRequest())
        async for change in stream:
            kind = change.kind
            if kind == instance_pb2.INSTANCE_CHANGE_KIND_SNAPSHOT:
                snapshot[change.instance.name] = instance_from_proto(change.instance)
            elif kind == instance_pb2.INSTANCE_CHANGE_KIND_SNAPSHOT_DONE:
                self._cache = snapshot
                self._synced = True
            elif kind == instance_pb2.INSTANCE_CHANGE_KIND_UPSERTED:
                self._cache[change.instance.name] = instance_from_proto(change.instance)
            elif kind == instance_pb2.INSTANCE_CHANGE_KIND_DELETED:
                self._cache.pop(change.instance.name, None)
