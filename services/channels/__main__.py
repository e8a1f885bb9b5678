"""`python -m services.channels`: the outbox service.

Opens its database (and migrates it), watches the router's instances, shares one aiohttp session for every
Evolution call, and serves ChannelsService until SIGTERM/SIGINT.
"""

from __future__ import annotations

import logging

import aiohttp
from omni.router.v1 import router_service_pb2_grpc

from servicekit.database import migrate, open_database
from servicekit.grpc_clients import open_channel
from servicekit.grpc_server import serve_until_signalled
from servicekit.instance_watch import WatchedInstanceDirectory
from servicekit.logs import configure_logging
from servicekit.retention import delivery_retention
from servicekit.runner import run
from servicekit.telemetry import setup_tracing
from services.channels.config import Settings
from services.channels.core.evolution import EvolutionClient
from services.channels.core.outbox import OutboxSender, SendPolicy
from services.channels.core.service import ChannelsCore
from services.channels.server import SERVICE_NAME, create_server
from services.channels.storage import MIGRATION_LOCK, MIGRATIONS, SCHEMA, OutboxStore

log = logging.getLogger("services.channels")


def send_policy(settings: Settings) -> SendPolicy:
    """The outbox policy from settings; another worker's send is presumed in flight for one HTTP timeout + 5 s."""
    return SendPolicy(
        attempts=settings.channels_send_attempts,
        backoff_seconds=settings.channels_retry_backoff_seconds,
        retry_after_seconds=settings.channels_retry_after_seconds,
        part_delay_seconds=settings.channels_part_delay_ms / 1000,
        reconcile_window_seconds=settings.channels_reconcile_window_seconds,
        lease_seconds=settings.channels_evolution_timeout_seconds + 5.0,
    )


async def main() -> None:
    settings = Settings()
    configure_logging("channels", settings.log_level)
    provider = setup_tracing("channels", settings)
    db = await open_database(settings.database_url_for("channels"), SCHEMA)
    await migrate(db, MIGRATIONS, lock_key=MIGRATION_LOCK)
    router_channel = open_channel(settings.address_of("router"), tracing=settings.enable_tracing)
    instances = WatchedInstanceDirectory(
        router_service_pb2_grpc.RouterServiceStub(router_channel), rpc_timeout=settings.rpc_timeout_seconds
    )
    instances.start()
    session = aiohttp.ClientSession()
    try:
        evolution = EvolutionClient(
            session,
            timeout_seconds=settings.channels_evolution_timeout_seconds,
            rate_limit_backoff_seconds=settings.channels_rate_limit_backoff_seconds,
        )
        store = OutboxStore(db)
        outbox = OutboxSender(store, evolution, policy=send_policy(settings), worker_id=settings.replica_id())
        retention = delivery_retention("finished outbox parts", store.purge_finished, settings)
        core = ChannelsCore(instances, evolution, outbox, fallback_evolution_key=settings.evolution_api_key)
        server, port, health = create_server(settings, core)
        await server.start()
        retention.start()
        log.info("channels listening on %s:%d", settings.grpc_host, port)
        await serve_until_signalled(
            server, health, [SERVICE_NAME], grace=settings.shutdown_grace_seconds, on_shutdown=retention.stop
        )
    finally:
        await instances.stop()
        await session.close()
        await router_channel.close(None)
        await db.close()
        provider.shutdown()


if __name__ == "__main__":
    run(main())
