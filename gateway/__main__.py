"""`python -m gateway`: serve the API with uvicorn on uvloop + httptools.

Uvicorn gets an import string and a factory so that `AUTOMAGIK_OMNI_API_WORKERS` > 1 can fork workers; each
worker builds its own app (and its own gRPC channels) from the environment.
"""

from __future__ import annotations

import sys

import uvicorn
from pydantic import ValidationError

from gateway.app.config import MissingApiKeyError, Settings
from servicekit.mesh_auth import MeshAuthError, MeshCredentials


def main() -> None:
    """Check the configuration, then run uvicorn until SIGTERM/SIGINT."""
    try:
        settings = Settings()
        settings.require_api_key()
        MeshCredentials.from_settings(settings, "gateway").require(production=settings.is_production)
    except (MissingApiKeyError, MeshAuthError, ValidationError) as exc:
        print(f"gateway: refusing to start: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    uvicorn.run(
        "gateway.app.main:create_app_from_env",
        factory=True,
        host=settings.api_host,
        port=settings.api_port,
        workers=settings.api_workers,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=settings.api_access_log,
        log_config=None,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds),
    )


if __name__ == "__main__":
    main()
