"""`python -m services.ingress`: the ingress process (accept webhooks, keep the inbox, dispatch to the router)."""

from __future__ import annotations

import logging

from omni.router.v1 import router_service_pb2_grpc

from servicekit.database import migrate, open_database
from servicekit.grpc_clients import open_channel
from servicekit.grpc_server import serve_until_signalled
from servicekit.instance_watch import WatchedInstanceDirectory
from servicekit.logs import configure_logging
from servicekit.retention import delivery_retention
from servicekit.runner import run
from servicekit.telemetry import setup_tracing
from services.ingress.config import Settings
from services.ingress.core.accept import IngressCore
from services.ingress.core.dispatcher import Dispatcher, DispatchPolicy
from services.ingress.router_client import GrpcMessageRouter
from services.ingress.server import SERVICE_NAME, create_server
from services.ingress.storage import MIGRATION_LOCK, MIGRATIONS, POSTGRES_SETTINGS, SCHEMA, InboxStore

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


async def main() -> None:
    settings = Settings()
    configure_logging("ingress", settings.log_level)
    provider = setup_tracing("ingress", settings)
    db = await open_database(settings.database_url_for("ingress"), SCHEMA, postgres_settings=POSTGRES_SETTINGS)
    channel = None
    instances = None
    try:
        await migrate(db, MIGRATIONS, lock_key=MIGRATION_LOCK)
        channel = open_channel(settings.address_of("router"), tracing=settings.enable_tracing)
        router_stub = router_service_pb2_grpc.RouterServiceStub(channel)
        instances = WatchedInstanceDirectory(router_stub, rpc_timeout=settings.rpc_timeout_seconds)
        instances.start()
        store = InboxStore(db)
        dispatcher = Dispatcher(
            store,
            GrpcMessageRouter(router_stub),
            replica_id=settings.replica_id(),
            policy=dispatch_policy(settings),
        )
        core = IngressCore(store, instances, on_accept=dispatcher.wake)
        retention = delivery_retention("finished inbox rows", store.purge_finished, settings)
        server, port, health = create_server(settings, core)
        await server.start()
        await dispatcher.start()
        retention.start()
        log.info("ingress listening on %s:%d (replica %s)", settings.grpc_host, port, dispatcher.replica_id)

        async def on_shutdown() -> None:
            await retention.stop()
            await dispatcher.stop(settings.shutdown_grace_seconds)

        await serve_until_signalled(
            server, health, [SERVICE_NAME], grace=settings.shutdown_grace_seconds, on_shutdown=on_shutdown
        )
    finally:
        if instances is not None:
            await instances.stop()
        if channel is not None:
            await channel.close(None)
        await db.close()
        provider.shutdown()


if __name__ == "__main__":
    run(main())
