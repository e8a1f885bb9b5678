"""`python -m services.router`: the brain and the control plane.

Loads the master key, opens its database (and migrates it), shares one aiohttp session for every agent call, talks
to the channels service for replies, and serves RouterService until SIGTERM/SIGINT.
"""

from __future__ import annotations

import logging
import time

from omni.channels.v1 import channels_service_pb2_grpc
from omni.ingress.v1 import ingress_service_pb2_grpc
from omni.tracing.v1 import tracing_service_pb2_grpc

from servicekit.address_guard import guarded_session
from servicekit.database import migrate, open_database
from servicekit.grpc_clients import open_channel
from servicekit.grpc_server import serve_until_signalled
from servicekit.logs import configure_logging
from servicekit.mesh_auth import mesh_credentials_or_exit
from servicekit.retention import delivery_retention
from servicekit.runner import run
from servicekit.telemetry import setup_tracing
from services.router.access_servicer import AccessServicer
from services.router.access_store import AccessRuleCache, AccessRuleRepository
from services.router.api_key_store import ApiKeyRepository
from services.router.channel_client import GrpcAccountChecker, GrpcChannelSender, GrpcProvisioner
from services.router.channel_media_client import GrpcChannelMedia
from services.router.config import Settings
from services.router.core.agent_client import AgentClient
from services.router.core.api_keys import ApiKeyService
from services.router.core.api_sends import ApiSender
from services.router.core.broadcaster import InstanceBroadcaster
from services.router.core.instances import InstanceService
from services.router.core.media_resolver import MediaResolver
from services.router.core.router import MessageRouter
from services.router.core.transcription import Transcriber, TranscriptionSettings
from services.router.core.users import UsersService
from services.router.ingress_client import GrpcStoredMedia
from services.router.purge_client import GrpcInstancePurger
from services.router.secret_box import SecretBox
from services.router.server import SERVICE_NAME, create_server
from services.router.storage import (
    MIGRATIONS,
    SCHEMA,
    IdentityRepository,
    InstanceRepository,
    RouteRepository,
)
from services.router.stored_secrets import UnreadableSecretsError, check_stored_secrets
from services.router.users_servicer import GrpcUserEraser, UsersServicer
from services.router.users_store import UsersRepository

log = logging.getLogger("services.router")


async def main() -> None:
    settings = Settings()
    configure_logging("router", settings.log_level)
    mesh = mesh_credentials_or_exit(settings, "router")
    try:
        box = SecretBox.for_router(settings)
    except (RuntimeError, ValueError) as exc:
        log.critical("cannot start: %s", exc)
        raise SystemExit(2) from None
    provider = setup_tracing("router", settings)
    db = await open_database(settings.database_url_for("router"), SCHEMA)
    await migrate(db, MIGRATIONS, lock_key=SCHEMA)
    try:  # a wrong master key stops the start here, not every message later
        await check_stored_secrets(db, box)
    except UnreadableSecretsError as exc:
        log.critical("cannot start: %s", exc)
        await db.close()
        provider.shutdown()
        raise SystemExit(2) from None
    channels_channel = open_channel(settings.address_of("channels"), tracing=settings.enable_tracing, mesh=mesh)
    purge_channels = [
        open_channel(settings.address_of(service), tracing=settings.enable_tracing, mesh=mesh)
        for service in ("ingress", "tracing")
    ]
    purger = GrpcInstancePurger(
        ingress=ingress_service_pb2_grpc.IngressServiceStub(purge_channels[0]),
        channels=channels_service_pb2_grpc.ChannelsServiceStub(channels_channel),
        tracing=tracing_service_pb2_grpc.TracingServiceStub(purge_channels[1]),
        timeout=settings.router_purge_timeout_seconds,
    )
    channels_stub = channels_service_pb2_grpc.ChannelsServiceStub(channels_channel)
    channels = GrpcChannelSender(
        channels_stub,
        send_timeout=settings.router_channel_send_timeout_seconds,
        presence_timeout=settings.router_presence_timeout_seconds,
    )
    session = guarded_session(
        allow_link_local=settings.allow_link_local_urls, limit=settings.router_agent_max_connections, limit_per_host=0
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
    access_rules = AccessRuleRepository(db)
    access_cache = AccessRuleCache(access_rules)
    await access_cache.start()  # rules in memory before the first message; reloaded on every change
    identity_watch = identities.watch()  # another replica's merge, erasure or reset empties this one's id cache
    await identity_watch.start()
    retention = delivery_retention("finished route records", routes.purge_finished, settings)
    router = MessageRouter(
        access=access_cache,
        instances=instance_repository,
        identities=identities,
        routes=routes,
        agent=AgentClient(session, max_response_bytes=settings.router_agent_max_response_bytes),
        channels=channels,
        typing_delay=settings.router_typing_delay_seconds,
        media=MediaResolver(
            GrpcStoredMedia(
                ingress_service_pb2_grpc.IngressServiceStub(purge_channels[0]),
                timeout=settings.router_media_fetch_timeout_seconds,
            ),
            GrpcChannelMedia(channels_stub, timeout=settings.router_media_fetch_timeout_seconds),
            max_bytes=settings.max_media_bytes,
        ),
        transcriber=Transcriber(
            session,
            defaults=TranscriptionSettings(
                url=settings.transcription_url,
                api_key=settings.transcription_api_key,
                model=settings.transcription_model,
                timeout_seconds=settings.transcription_timeout_seconds,
            ),
        ),
    )
    try:
        server, port, health = create_server(
            settings,
            instances=InstanceService(
                instance_repository,
                InstanceBroadcaster(settings.router_watch_queue_size),
                GrpcAccountChecker(channels_stub, timeout=settings.router_account_check_timeout_seconds),
                purger=purger,
                webhook_base_url=settings.public_url,
                production=settings.is_production,
                webhook_secret_grace_seconds=settings.router_webhook_secret_grace_seconds,
                allow_link_local_urls=settings.allow_link_local_urls,
                provisioner=GrpcProvisioner(
                    channels_stub, timeout=max(30.0, settings.router_account_check_timeout_seconds)
                ),
            ),
            router=router,
            api_sender=ApiSender(instances=instance_repository, channels=channels),
            api_keys=ApiKeyService(ApiKeyRepository(db), instance_repository),
            users=UsersServicer(
                UsersService(
                    UsersRepository(db, forget_ids=identities.forget_ids),
                    GrpcUserEraser(
                        tracing=tracing_service_pb2_grpc.TracingServiceStub(purge_channels[1]),
                        ingress=ingress_service_pb2_grpc.IngressServiceStub(purge_channels[0]),
                        timeout=settings.router_purge_timeout_seconds,
                    ),
                    clock=time.time,
                )
            ),
            access=AccessServicer(rules=access_rules, cache=access_cache, instances=instance_repository),
        )
        await server.start()
        retention.start()
        log.info("router listening on %s:%d", settings.grpc_host, port)
        await serve_until_signalled(
            server, health, [SERVICE_NAME], grace=settings.shutdown_grace_seconds, on_shutdown=retention.stop
        )
    finally:
        await access_cache.stop()
        await identity_watch.stop()
        await router.aclose()
        await session.close()
        await channels_channel.close(None)
        for purge_channel in purge_channels:
            await purge_channel.close(None)
        await db.close()
        provider.shutdown()


if __name__ == "__main__":
    run(main())
