"""`python -m services.channels`: the outbox service.

Opens its database (and migrates it), watches the router's instances, builds one sender per channel (Evolution
with one shared aiohttp session, Discord's REST API through discord.py, Slack's Web API through slack_sdk on the
same session), and serves ChannelsService until SIGTERM/SIGINT.
"""

from __future__ import annotations

import logging

from omni.ingress.v1 import ingress_service_pb2_grpc
from omni.router.v1 import router_service_pb2_grpc

from servicekit.address_guard import guarded_session
from servicekit.channels import Channel
from servicekit.database import migrate, open_database
from servicekit.discord_endpoints import configure_discord
from servicekit.grpc_clients import open_channel
from servicekit.grpc_server import serve_until_signalled
from servicekit.instance_watch import WatchedInstanceDirectory
from servicekit.logs import configure_logging
from servicekit.mesh_auth import mesh_credentials_or_exit
from servicekit.metrics import OUTBOX_RETRIES, add_metrics_service
from servicekit.retention import delivery_retention
from servicekit.runner import run
from servicekit.telemetry import setup_tracing
from services.channels.bot_status_client import GrpcBotStatusSource
from services.channels.config import Settings
from services.channels.core.connections import ConnectionBook, ConnectionDesk
from services.channels.core.evolution import EvolutionClient
from services.channels.core.evolution_admin import EvolutionAdmin
from services.channels.core.outbox import OutboxSender, SendPolicy
from services.channels.core.senders.base import ChannelSender
from services.channels.core.senders.discord import DiscordSender
from services.channels.core.senders.slack import SlackSender
from services.channels.core.senders.whatsapp import EvolutionSender
from services.channels.core.service import ChannelsCore
from services.channels.server import SERVICE_NAME, create_server
from services.channels.storage import MIGRATION_LOCK, MIGRATIONS, SCHEMA, ConnectionStateStore, OutboxStore

log = logging.getLogger("services.channels")


def send_policy(settings: Settings) -> SendPolicy:
    """The outbox policy from settings; another worker's send is presumed in flight for the longest channel request
    timeout + 5 s."""
    return SendPolicy(
        attempts=settings.channels_send_attempts,
        backoff_seconds=settings.channels_retry_backoff_seconds,
        retry_after_seconds=settings.channels_retry_after_seconds,
        part_delay_seconds=settings.channels_part_delay_ms / 1000,
        reconcile_window_seconds=settings.channels_reconcile_window_seconds,
        lease_seconds=max(settings.channels_evolution_timeout_seconds, settings.channels_discord_timeout_seconds) + 5.0,
    )


async def main() -> None:
    settings = Settings()
    configure_logging("channels", settings.log_level)
    mesh = mesh_credentials_or_exit(settings, "channels")
    configure_discord(settings)
    provider = setup_tracing("channels", settings)
    db = await open_database(settings.database_url_for("channels"), SCHEMA)
    await migrate(db, MIGRATIONS, lock_key=MIGRATION_LOCK)
    router_channel = open_channel(settings.address_of("router"), tracing=settings.enable_tracing, mesh=mesh)
    instances = WatchedInstanceDirectory(
        router_service_pb2_grpc.RouterServiceStub(router_channel), rpc_timeout=settings.rpc_timeout_seconds
    )
    instances.start()
    ingress_channel = open_channel(settings.address_of("ingress"), tracing=settings.enable_tracing, mesh=mesh)
    session = guarded_session(allow_link_local=settings.allow_link_local_urls)
    discord_sender = DiscordSender(
        GrpcBotStatusSource(ingress_service_pb2_grpc.IngressServiceStub(ingress_channel)),
        send_timeout_seconds=settings.channels_discord_timeout_seconds,
        max_ratelimit_wait_seconds=settings.channels_discord_max_ratelimit_wait_seconds,
        session=session,
    )
    slack_sender = SlackSender(api_url=settings.slack_api_url, session=session)
    try:
        evolution = EvolutionClient(
            session,
            timeout_seconds=settings.channels_evolution_timeout_seconds,
            rate_limit_backoff_seconds=settings.channels_rate_limit_backoff_seconds,
        )
        senders: dict[Channel, ChannelSender] = {
            Channel.WHATSAPP: EvolutionSender(
                evolution, fallback_key=settings.evolution_api_key, receipts=settings.whatsapp_receipts
            ),
            Channel.DISCORD: discord_sender,
            Channel.SLACK: slack_sender,
        }
        store = OutboxStore(db)
        outbox = OutboxSender(
            store,
            senders,
            policy=send_policy(settings),
            worker_id=settings.replica_id(),
            on_retry=lambda channel: OUTBOX_RETRIES.labels(channel=channel.value).inc(),
        )
        retention = delivery_retention("finished outbox parts", store.purge_finished, settings)
        admin = EvolutionAdmin(
            evolution,
            fallback_key=settings.evolution_api_key,
            default_url=settings.evolution_api_url,
            receipts=settings.whatsapp_receipts,
        )
        connections = ConnectionDesk(instances, {Channel.WHATSAPP: admin}, ConnectionBook(ConnectionStateStore(db)))
        instances.listen(connections.instances_changed)
        core = ChannelsCore(instances, senders, outbox, connections=connections)
        server, port, health = create_server(settings, core)
        add_metrics_service(server)
        await server.start()
        retention.start()
        log.info("channels listening on %s:%d", settings.grpc_host, port)
        await serve_until_signalled(
            server, health, [SERVICE_NAME], grace=settings.shutdown_grace_seconds, on_shutdown=retention.stop
        )
    finally:
        await instances.stop()
        await discord_sender.aclose()
        await slack_sender.aclose()
        await session.close()
        await ingress_channel.close(None)
        await router_channel.close(None)
        await db.close()
        provider.shutdown()


if __name__ == "__main__":
    run(main())
