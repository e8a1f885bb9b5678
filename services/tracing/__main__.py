"""`python -m services.tracing`: the OTLP receiver and trace query service."""

from __future__ import annotations

import logging
import os

from servicekit.grpc_server import serve_until_signalled
from servicekit.logs import configure_logging
from servicekit.mesh_auth import mesh_credentials_or_exit
from servicekit.metrics import add_metrics_service
from servicekit.retention import RetentionTask
from servicekit.runner import run
from services.tracing.config import Settings
from services.tracing.core import TracingCore
from services.tracing.forwarder import OtlpForwarder, target_from_env
from services.tracing.otlp import EXPORT_OBSERVERS
from services.tracing.server import SERVICE_NAMES, create_server
from services.tracing.span_metrics import SpanMetrics
from services.tracing.storage import TraceStore, open_tracing_database

log = logging.getLogger("services.tracing")


async def main() -> None:
    """Open the database, start retention and serve until SIGTERM. No setup_tracing: this service must not export
    its own spans to itself."""
    settings = Settings()
    configure_logging("tracing", settings.log_level)
    mesh_credentials_or_exit(settings, "tracing")
    db = await open_tracing_database(settings.database_url_for("tracing"))
    try:
        core = TracingCore(TraceStore(db))
        retention = RetentionTask(
            "traces",
            lambda: core.purge(settings.trace_retention_days),
            interval_seconds=settings.tracing_retention_interval_seconds,
        )
        server, port, health = create_server(settings, core)
        add_metrics_service(server)
        span_metrics = SpanMetrics()
        EXPORT_OBSERVERS.append(lambda _request, spans: span_metrics.observe(spans))
        target = target_from_env(os.environ)
        forwarder = OtlpForwarder.for_target(target) if target is not None else None
        if forwarder is not None and target is not None:
            EXPORT_OBSERVERS.append(lambda request, _spans: forwarder.offer(request))
            forwarder.start()
            log.info("forwarding spans to %s (%s)", target.endpoint, target.protocol)

        async def on_shutdown() -> None:
            await retention.stop()
            if forwarder is not None:
                await forwarder.stop()

        await server.start()
        retention.start()
        log.info("tracing listening on %s:%d (%s)", settings.grpc_host, port, db.dialect)
        await serve_until_signalled(
            server, health, SERVICE_NAMES, grace=settings.shutdown_grace_seconds, on_shutdown=on_shutdown
        )
    finally:
        await db.close()


if __name__ == "__main__":
    run(main())
