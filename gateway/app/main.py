"""Assembles the gateway: settings, tracing, the mesh channels (lifespan), error handlers, CORS and routes."""

from __future__ import annotations

from collections.abc import AsyncIterator, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.telemetry import TelemetryConfig
from opentelemetry.sdk.trace import TracerProvider

from gateway.app.api.edge_trace import LinkCallerTrace
from gateway.app.api.errors import install_error_handlers
from gateway.app.api.limits import BodyLimits
from gateway.app.api.main import api_router
from gateway.app.api.rate_limit import RateLimit, buckets_from
from gateway.app.api.routes import health, metrics
from gateway.app.api.webhooks.fast_path import WebhookFastPath
from gateway.app.config import Settings
from gateway.app.edge import OmniGateway
from gateway.app.mesh import Mesh
from servicekit.logs import configure_logging
from servicekit.telemetry import setup_tracing

DESCRIPTION = (
    "Omni hub: one API between chat channels (WhatsApp via Evolution, Discord, Slack) and AI agents. "
    "Every /api/v1 route except the webhook receivers needs the `x-api-key` header."
)


def _untraced(scope: MutableMapping[str, Any]) -> bool:
    """Health probes and the docs are not messages: no trace for them."""
    path = str(scope.get("path", ""))
    return path in ("/health", "/metrics") or path.startswith(("/docs", "/openapi", "/redoc"))


TELEMETRY: TelemetryConfig = {
    "tracing": True,
    # One span per request starts the message's trace at the edge; FastAPI's per-dependency and per-endpoint spans,
    # its metrics and its exception logs would cost CPU on the webhook hot path and add nothing the mesh's spans
    # do not already show.
    "operation_spans": False,
    "metrics": False,
    "logs": False,
    "exclude": _untraced,
}


def create_app(settings: Settings, *, tracer_provider: TracerProvider | None = None) -> FastAPI:
    """Build the app for `settings`; the gRPC channels open when the app starts and close when it stops.

    `tracer_provider` (tests, embedding) receives the request spans instead of a provider set up from `settings`.

    Raises:
        MissingApiKeyError: no admin key is configured.
    """
    settings.require_api_key()
    provider = setup_tracing("gateway", settings) if settings.enable_tracing and tracer_provider is None else None
    telemetry: TelemetryConfig = (
        TELEMETRY if settings.enable_tracing else {"tracing": False, "metrics": False, "logs": False}
    )
    if tracer_provider is not None:
        telemetry = {**TELEMETRY, "tracer_provider": tracer_provider}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        mesh = Mesh.open(settings)
        app.state.mesh = mesh
        try:
            yield
        finally:
            app.state.mesh = None
            await mesh.close(grace=settings.shutdown_grace_seconds)
            if provider is not None:
                provider.shutdown()

    app = OmniGateway(
        title="Omni hub API",
        version="1.0.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        telemetry=telemetry,
    )
    app.state.settings = settings
    app.state.mesh = None
    install_error_handlers(app)
    app.add_middleware(WebhookFastPath)
    # Outside the fast path (added later = runs earlier): cheap refusals before any body is read or parsed.
    app.add_middleware(
        BodyLimits,
        rest_limit=settings.max_request_body_bytes,
        webhook_limit=settings.max_webhook_body_bytes,
        max_json_depth=settings.max_json_depth,
    )
    app.add_middleware(
        RateLimit,
        buckets=buckets_from(
            webhook=(settings.webhook_rate_limit, settings.webhook_rate_burst),
            send=(settings.send_rate_limit, settings.send_rate_burst),
        ),
    )
    app.add_middleware(LinkCallerTrace)
    origins = settings.cors_origin_list
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_credentials="*" not in origins,
            allow_methods=["*"],
            allow_headers=["*"],
        )
    app.include_router(health.router)
    app.include_router(metrics.router)
    app.include_router(api_router)
    return app


def create_app_from_env() -> FastAPI:
    """The uvicorn factory: settings from the environment (and .env), logging configured in this process."""
    settings = Settings()
    configure_logging("gateway", settings.log_level)
    return create_app(settings)
