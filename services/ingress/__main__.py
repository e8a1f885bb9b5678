"""`python -m services.ingress`: the ingress process (accept webhooks, keep the inbox, dispatch to the router)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from omni.channels.v1 import channels_service_pb2_grpc
from omni.router.v1 import router_service_pb2_grpc

from servicekit.channels import Channel
from servicekit.database import migrate, open_database
from servicekit.discord_endpoints import configure_discord
from servicekit.grpc_clients import open_channel
from servicekit.grpc_server import serve_until_signalled
from servicekit.instance_watch import WatchedInstanceDirectory
from servicekit.instances import Instance
from servicekit.logs import configure_logging
from servicekit.mesh_auth import mesh_credentials_or_exit
from servicekit.metrics import DEAD_LETTERS, INBOX_BACKLOG, add_metrics_service
from servicekit.retention import RetentionTask, delivery_retention
from servicekit.runner import run
from servicekit.telemetry import setup_tracing
from services.ingress.channels_client import GrpcConnectionRelay
from services.ingress.config import Settings
from services.ingress.core.accept import IngressCore
from services.ingress.core.bots.discord_bot import Cursors, DiscordBot
from services.ingress.core.bots.host import BotHost, bot_statuses
from services.ingress.core.bots.slack_socket import SlackSocketBot
from services.ingress.core.bots.status import BotStatus
from services.ingress.core.dispatcher import Dispatcher, DispatchPolicy
from services.ingress.core.media_store import MediaLibrary
from services.ingress.router_client import GrpcRouterPort
from services.ingress.server import SERVICE_NAME, create_server
from services.ingress.storage import (
    MIGRATION_LOCK,
    MIGRATIONS,
    POSTGRES_SETTINGS,
    SCHEMA,
    BotLeaseStore,
    InboxStore,
    MediaBlobStore,
)

log = logging.getLogger("services.ingress")


def dispatch_policy(settings: Settings) -> DispatchPolicy:
    """The dispatcher's policy from the settings."""
    return DispatchPolicy(
        concurrency=settings.ingress_dispatch_concurrency,
        route_deadline_seconds=settings.ingress_route_deadline_seconds,
        max_attempts=settings.ingress_max_attempts,
        retry_base_seconds=settings.ingress_retry_base_seconds,
        retry_max_seconds=settings.ingress_retry_max_seconds,
        lease_seconds=settings.ingress_lease_seconds,
        poll_interval_seconds=settings.ingress_poll_interval_seconds,
    )


def bot_host(settings: Settings, leases: BotLeaseStore, core: IngressCore) -> BotHost:
    """The host of this replica's bots: one Discord bot per active Discord instance, and one Socket Mode connection
    per active Slack instance with an app token, whose lease it holds."""

    def discord_bot(instance: Instance, cursors: Cursors, on_state_change: Callable[[], None]) -> DiscordBot:
        return DiscordBot(
            instance,
            core.accept,
            cursors=cursors,
            on_state_change=on_state_change,
            guild_ready_timeout=settings.discord_guild_ready_timeout_seconds,
        )

    def slack_socket(instance: Instance, cursors: Cursors, on_state_change: Callable[[], None]) -> SlackSocketBot:
        return SlackSocketBot(
            instance, core.accept, api_url=settings.slack_api_url, cursors=cursors, on_state_change=on_state_change
        )

    return BotHost(
        leases,
        {Channel.DISCORD: discord_bot, Channel.SLACK: slack_socket},
        owner=settings.replica_id(),
        lease_seconds=settings.ingress_bot_lease_seconds,
        renew_seconds=settings.ingress_bot_renew_seconds,
        error_retry_seconds=settings.ingress_bot_error_retry_seconds,
    )


async def main() -> None:
    settings = Settings()
    configure_logging("ingress", settings.log_level)
    mesh = mesh_credentials_or_exit(settings, "ingress")
    configure_discord(settings)
    provider = setup_tracing("ingress", settings)
    db = await open_database(settings.database_url_for("ingress"), SCHEMA, postgres_settings=POSTGRES_SETTINGS)
    channel = None
    channels_channel = None
    instances = None
    try:
        await migrate(db, MIGRATIONS, lock_key=MIGRATION_LOCK)
        channel = open_channel(settings.address_of("router"), tracing=settings.enable_tracing, mesh=mesh)
        router_stub = router_service_pb2_grpc.RouterServiceStub(channel)
        instances = WatchedInstanceDirectory(router_stub, rpc_timeout=settings.rpc_timeout_seconds)
        instances.start()
        store = InboxStore(db)
        dispatcher = Dispatcher(
            store,
            GrpcRouterPort(router_stub),
            replica_id=settings.replica_id(),
            policy=dispatch_policy(settings),
        )
        leases = BotLeaseStore(db)
        blobs = MediaBlobStore(db)
        media = MediaLibrary(blobs, retention_hours=settings.media_retention_hours)
        core = IngressCore(
            store,
            instances,
            on_accept=dispatcher.wake,
            also_purged=(leases, blobs),
            max_media_bytes=settings.max_media_bytes,
            media=media,
            refresh=instances.refresh,
        )
        bots = bot_host(settings, leases, core)
        instances.listen(bots.instances_changed)
        retention = delivery_retention("finished inbox rows", store.purge_finished, settings)
        media_retention = RetentionTask(
            "received media", media.sweep, interval_seconds=settings.delivery_retention_interval_seconds
        )

        async def statuses(instance_name: str) -> list[BotStatus]:
            return await bot_statuses(leases, instance_name, time.time())

        channels_channel = open_channel(settings.address_of("channels"), tracing=settings.enable_tracing, mesh=mesh)
        relay = GrpcConnectionRelay(channels_service_pb2_grpc.ChannelsServiceStub(channels_channel))
        server, port, health = create_server(settings, core, statuses, connection_events=relay.relay)

        async def refresh_metrics() -> None:
            # Read at scrape time: the dead letters are rows every replica shares, not a per-process count.
            DEAD_LETTERS.set((await core.list_dead_letters("", 1, 1))[1])
            INBOX_BACKLOG.set(await store.count_backlog())

        add_metrics_service(server, refresh=refresh_metrics)
        await server.start()
        await dispatcher.start()
        bots.start()
        retention.start()
        media_retention.start()
        log.info("ingress listening on %s:%d (replica %s)", settings.grpc_host, port, dispatcher.replica_id)

        async def on_shutdown() -> None:
            await bots.stop()
            await retention.stop()
            await media_retention.stop()
            await dispatcher.stop(settings.shutdown_grace_seconds)

        await serve_until_signalled(
            server, health, [SERVICE_NAME], grace=settings.shutdown_grace_seconds, on_shutdown=on_shutdown
        )
    finally:
        if instances is not None:
            await instances.stop()
        if channel is not None:
            await channel.close(None)
        if channels_channel is not None:
            await channels_channel.close(None)
        await db.close()
        provider.shutdown()


if __name__ == "__main__":
    run(main())
