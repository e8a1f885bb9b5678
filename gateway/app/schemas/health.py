"""The /health answer."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class HealthOut(BaseModel):
    """Overall health plus each mesh service's gRPC health status (SERVING, NOT_SERVING, UNAVAILABLE, ...)."""

    status: Literal["healthy", "unhealthy"]
    services: dict[str, str]
