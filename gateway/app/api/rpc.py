"""The gateway's one way to call the mesh: with a deadline, failing fast when a service is down."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from servicekit import grpc_clients

Resp = TypeVar("Resp")


async def call(method: Callable[..., Awaitable[Resp]], request: Any, *, timeout: float) -> Resp:
    """Invoke a unary RPC; a service that is down is a 503 now rather than a 504 after the deadline."""
    return await grpc_clients.call(method, request, timeout=timeout, wait_for_ready=False)
