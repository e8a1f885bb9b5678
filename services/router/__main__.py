"""`python -m services.router`: the brain and the control plane.

Loads the master key, opens its database (and migrates it), shares one aiohttp session for every agent call, talks
to the channels service for replies, and serves RouterService until SIGTERM/SIGINT.
"""

from __future__ import annotations

import logging

import aiohttp
from omni.channels.v1 import channels_service_pb2_grpc

from servicekit.database import migrate, open_database
from servicekit.grpc_clients import open_channel
from servicekit.grpc_server import serve_until_signalled
from servicekit.logs import configure_logging
from servicekit.retention import delivery_retention
from servicekit.runner import run
from servicekit.telemetry import setup_tracing
from services.router.channel_client import GrpcAccountChecker, GrpcChannelSender
from services.router.config import Settings
from services.router.core.agent_client import AgentClient
from services.router.core.api_sends import ApiSender
from services.router.core.broadcaster import InstanceBroadcaster
from services.router.core.instances import InstanceService
from services.router.core.router import MessageRouter
from services.router.secret_box import SecretBox
from services.router.server import SERVICE_NAME, create_server
from services.router.storage import (
    MIGRATIONS,
    SCHEMA,
    IdentityRepository,
    InstanceRepository,
    RouteRepository,
)

log = logging.getLogger("services.router")


async def main() -> None:
    settings = Settings()
    configure_logging("router", settings.log_level)
    try:
        box = SecretBox.from_settings(settings.secret_key, settings.data_dir, production=settings.is_production)
    except (RuntimeError, ValueError) as exc:
        log.critical("cannot start: %s", exc)
        raise SystemExit(2) from None
    provider = setup_tracing("router", settings)
    db = await open_database(settings.database_url_for("router"), SCHEMA)
    await migrate(db, MIGRATIONS, lock_key=SCHEMA)
    channels_channel = open_channel(settings.address_of("channels"), tracing=settings.enable_tracing)
    channels_stub = channels_service_pb2_grpc.ChannelsServiceStub(channels_channel)
    channels = GrpcChannelSender(
        channels_stub,
        send_timeout=settings.router_channel_send_timeout_seconds,
        presence_timeout=settings.router_presence_timeout_seconds,
    )
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=settings.router_agent_max_connections, limit_per_host=0)
    )
    identities = IdentityRepository(db)
    instance_repository = InstanceRepository(
        db, box, cache_seconds=settings.router_instance_cache_seconds, on_delete=identities.forget_instance
    )
    upgraded = await instance_repository.upgrade_legacy_rows()
    if upgraded:
        log.info("rewrote %d instances stored before the per-channel config", upgraded)
    if await instance_repository.assign_missing_ids():
        log.info("gave instances stored before instance ids their id")
    routes = RouteRepository(db)
    retention = delivery_retention("finished route records", routes.purge_finished, settings)
    router = MessageRouter(
        instances=instance_repository,
        identities=identities,
        routes=routes,
        agent=AgentClient(session),
        channels=channels,
        typing_delay=settings.router_typing_delay_seconds,
    )
    try:
        server, port, health = create_server(
            settings,
            instances=InstanceService(
                instance_repository,
                InstanceBroadcaster(settings.router_watch_queue_size),
                GrpcAccountChecker(channels_stub, timeout=settings.router_account_check_timeout_seconds),
            ),
            router=router,
            api_sender=ApiSender(instances=instance_repository, channels=channels),
        )
        await server.start()
        retention.start()
        log.info("router listening on %s:%d", settings.grpc_host, port)
        await serve_until_signalled(
            server, health, [SERVICE_NAME], grace=settings.shutdown_grace_seconds, on_shutdown=retention.stop
        )
    finally:
        await router.aclose()
        await session.close()
        await channels_channel.close(None)
        await db.close()
        provider.shutdown()


if __name__ == "__main__":
    run(main())
