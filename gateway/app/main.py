"""Assembles the gateway: settings, tracing, the mesh channels (lifespan), error handlers, CORS and routes."""

from __future__ import annotations

from collections.abc import AsyncIterator, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.telemetry import TelemetryConfig

from gateway.app.api.errors import install_error_handlers
from gateway.app.api.main import api_router
from gateway.app.api.routes import health
from gateway.app.api.webhooks.fast_path import WebhookFastPath
from gateway.app.config import Settings
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
    return path == "/health" or path.startswith(("/docs", "/openapi", "/redoc"))


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


def create_app(settings: Settings) -> FastAPI:
    """Build the app for `settings`; the gRPC channels open when the app starts and close when it stops.

    Raises:
        MissingApiKeyError: no admin key is configured.
    """
    settings.require_api_key()
    provider = setup_tracing("gateway", settings) if settings.enable_tracing else None

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

    app = FastAPI(
        title="Omni hub API",
        version="1.0.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        telemetry=TELEMETRY if settings.enable_tracing else {"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.state.mesh = None
    install_error_handlers(app)
    app.add_middleware(WebhookFastPath)
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
    app.include_router(api_router)
    return app


def create_app_from_env() -> FastAPI:
    """The uvicorn factory: settings from the environment (and .env), logging configured in this process."""
    settings = Settings()
    configure_logging("gateway", settings.log_level)
    return create_app(settings)
