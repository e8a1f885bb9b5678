"""Scoped API keys presented to a service other than the router, resolved by asking the router (which owns them).

A key is checked on every public RPC a direct client makes, so answers are cached briefly: a valid key for a few
seconds (a revoked key stops working within that window), an unknown one for less (a key just created works almost
at once). Keys are cached by their SHA-256, never in clear, and the cache is bounded.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import grpc
from omni.router.v1 import router_service_pb2, router_service_pb2_grpc

from servicekit.errors import UnauthenticatedError
from servicekit.grpc_clients import call, open_channel
from servicekit.mesh_auth import KeyResolver, MeshCredentials, ServerAuth
from servicekit.principal_cache import Missing, PrincipalCache
from servicekit.principals import Principal
from servicekit.settings import MeshSettings

if TYPE_CHECKING:
    from omni.router.v1.router_service_pb2_grpc import RouterServiceAsyncStub as RouterStub
else:
    from omni.router.v1.router_service_pb2_grpc import RouterServiceStub as RouterStub


class RouterKeyResolver:
    """`KeyResolver` calling `RouterService.AuthenticateApiKey` with the mesh credential, with a small TTL cache.

    The channel to the router is opened on first use (most processes never see a scoped key over gRPC).
    """

    def __init__(
        self,
        open_stub: Callable[[], RouterStub],
        *,
        timeout: float = 5.0,
        positive_ttl: float = 5.0,
        negative_ttl: float = 2.0,
        max_entries: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._open_stub = open_stub
        self._stub: RouterStub | None = None
        self._timeout = timeout
        self._cache = PrincipalCache(
            hit_seconds=positive_ttl, miss_seconds=negative_ttl, max_entries=max_entries, clock=clock
        )

    async def __call__(self, key: str) -> Principal | None:
        cached = self._cache.get(key)
        if not isinstance(cached, Missing):
            return cached
        principal = await self._ask_router(key)
        self._cache.put(key, principal)
        return principal

    async def _ask_router(self, key: str) -> Principal | None:
        if self._stub is None:
            self._stub = self._open_stub()
        try:
            response = await call(
                self._stub.AuthenticateApiKey,
                router_service_pb2.AuthenticateApiKeyRequest(key=key),
                timeout=self._timeout,
            )
        except UnauthenticatedError:
            return None
        return Principal("scoped", instance_name=response.api_key.instance_name, key_id=response.api_key.id)


def router_key_resolver(settings: MeshSettings, credentials: MeshCredentials) -> RouterKeyResolver:
    """A resolver reaching the router at its configured address, as `credentials.service`."""

    def open_stub() -> RouterStub:
        channel: grpc.aio.Channel = open_channel(settings.address_of("router"), tracing=False, mesh=credentials)
        return router_service_pb2_grpc.RouterServiceStub(channel)

    return RouterKeyResolver(open_stub, timeout=settings.rpc_timeout_seconds)


def server_auth(settings: MeshSettings, service: str, *, resolve_key: KeyResolver | None = None) -> ServerAuth:
    """The checks a service's server makes, from settings; refuses (`MeshAuthError`) when the mesh is not closed.

    Scoped keys are resolved by `resolve_key` (the router passes its own store) or by asking the router.
    """
    credentials = MeshCredentials.from_settings(settings, service)
    credentials.require(production=settings.is_production)
    resolver = resolve_key if resolve_key is not None else router_key_resolver(settings, credentials)
    return ServerAuth(credentials=credentials, admin_key=settings.api_key, resolve_key=resolver)
