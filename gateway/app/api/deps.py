"""Request dependencies: settings, the mesh stubs, and who the caller is and what it may reach.

Routes take these as `Annotated` parameters (`router: RouterStubDep`); every stub comes from the app's `Mesh`
(`app.state.mesh`, opened by the lifespan; tests put one bound to in-process fake servers there). The getters are
`async def` on purpose: FastAPI runs plain `def` dependencies in a thread pool, which would cost a thread hop on
every request.
"""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader
from omni.router.v1 import router_service_pb2

from gateway.app.api.rpc import call
from gateway.app.config import Settings
from gateway.app.mesh import (
    AccessStub,
    ChannelsStub,
    HealthStubMap,
    IngressStub,
    Mesh,
    RouterStub,
    TracingStub,
    UsersStub,
)
from servicekit.errors import OmniError, UnauthenticatedError, UnavailableError
from servicekit.principal_cache import MISSING, PrincipalCache
from servicekit.principals import ADMIN, SCOPED_KEY_PREFIX, Principal

API_KEY_HEADER = "x-api-key"

api_key_scheme = APIKeyHeader(
    name=API_KEY_HEADER,
    scheme_name="ApiKey",
    description="The admin key (AUTOMAGIK_OMNI_API_KEY), or a key scoped to one instance (omni_sk_...).",
    auto_error=False,
)
"""Declares the header in the OpenAPI spec (Swagger's Authorize button); the check itself is `require_api_key`."""

MAX_SCOPED_KEY_LENGTH = 256
"""Longer headers are no key the router issues: refused without asking it."""


async def get_settings(request: Request) -> Settings:
    """The settings the app was created with."""
    settings: Settings = request.app.state.settings
    return settings


def mesh_of(app: Any) -> Mesh:
    """The app's mesh stubs; 503 while the app is not connected yet (or any more)."""
    mesh: Mesh | None = getattr(app.state, "mesh", None)
    if mesh is None:
        raise UnavailableError("the gateway is not connected to the mesh yet", reason="GATEWAY_STARTING")
    return mesh


def _mesh(request: Request) -> Mesh:
    return mesh_of(request.app)


async def get_router_stub(request: Request) -> RouterStub:
    """The RouterService stub."""
    return _mesh(request).router


async def get_access_stub(request: Request) -> AccessStub:
    """The AccessService stub (served by the router process)."""
    stub = _mesh(request).access
    if stub is None:
        raise UnavailableError("the gateway has no AccessService stub", reason="GATEWAY_STARTING")
    return stub


async def get_ingress_stub(request: Request) -> IngressStub:
    """The IngressService stub."""
    return _mesh(request).ingress


async def get_channels_stub(request: Request) -> ChannelsStub:
    """The ChannelsService stub."""
    return _mesh(request).channels


async def get_tracing_stub(request: Request) -> TracingStub:
    """The TracingService stub."""
    return _mesh(request).tracing


async def get_users_stub(request: Request) -> UsersStub:
    """The UsersService stub (served by the router process)."""
    stub = _mesh(request).users
    if stub is None:
        raise UnavailableError("the gateway has no UsersService stub", reason="GATEWAY_STARTING")
    return stub


async def get_health_stubs(request: Request) -> HealthStubMap:
    """One grpc.health.v1 stub per mesh service."""
    return _mesh(request).health


SettingsDep = Annotated[Settings, Depends(get_settings)]
RouterStubDep = Annotated[RouterStub, Depends(get_router_stub)]
AccessStubDep = Annotated[AccessStub, Depends(get_access_stub)]
IngressStubDep = Annotated[IngressStub, Depends(get_ingress_stub)]
ChannelsStubDep = Annotated[ChannelsStub, Depends(get_channels_stub)]
TracingStubDep = Annotated[TracingStub, Depends(get_tracing_stub)]
UsersStubDep = Annotated[UsersStub, Depends(get_users_stub)]
HealthStubs = Annotated[HealthStubMap, Depends(get_health_stubs)]


def principal_cache_of(app: Any) -> PrincipalCache:
    """The app's cache of resolved scoped keys, made on first use (one per app, so per worker process)."""
    cache: PrincipalCache | None = getattr(app.state, "principal_cache", None)
    if cache is None:
        cache = PrincipalCache()
        app.state.principal_cache = cache
    return cache


async def principal_of_key(app: Any, provided: str) -> Principal | None:
    """Who presents `provided`: the admin (constant-time match of the admin key), the instance of a scoped key
    (asked of the router's AuthenticateApiKey, remembered a few seconds), or None.

    Raises:
        OmniError: the router could not be asked (503/504); an unknown key is None, not an error.
    """
    if not provided:
        return None
    settings: Settings = app.state.settings
    # Bytes, not str: compare_digest refuses non-ASCII str, and a header may carry any latin-1 byte.
    if hmac.compare_digest(provided.encode("utf-8", "surrogatepass"), settings.api_key.encode()):
        return ADMIN
    if not provided.startswith(SCOPED_KEY_PREFIX) or len(provided) > MAX_SCOPED_KEY_LENGTH:
        return None
    cache = principal_cache_of(app)
    cached = cache.get(provided)
    if cached is not MISSING:
        return cached  # type: ignore[return-value]
    try:
        answer = await call(
            mesh_of(app).router.AuthenticateApiKey,
            router_service_pb2.AuthenticateApiKeyRequest(key=provided),
            timeout=settings.api_rpc_timeout_seconds,
        )
    except UnauthenticatedError:
        cache.put(provided, None)
        return None
    principal = Principal("scoped", instance_name=answer.api_key.instance_name, key_id=answer.api_key.id)
    cache.put(provided, principal)
    return principal


async def require_api_key(request: Request, provided: Annotated[str | None, Depends(api_key_scheme)]) -> Principal:
    """The caller behind `x-api-key` (FastAPI resolves it once per request, however many dependencies ask).

    Raises:
        UnauthenticatedError: the header is missing or no valid key (401).
    """
    if not provided:
        raise UnauthenticatedError("missing x-api-key header", reason="API_KEY_MISSING")
    principal = await principal_of_key(request.app, provided)
    if principal is None:
        raise UnauthenticatedError("invalid API key", reason="API_KEY_INVALID")
    return principal


PrincipalDep = Annotated[Principal, Depends(require_api_key)]


def path_instance(request: Request) -> str:
    """The instance a route's path names (`{instance}` or `{name}`)."""
    for param in ("instance", "name", "instance_name"):
        value = request.path_params.get(param)
        if isinstance(value, str):
            return value
    raise RuntimeError(f"route {request.url.path} names no instance in its path")


async def require_instance_access(request: Request, principal: PrincipalDep) -> Principal:
    """The caller, when it may reach the instance in the path.

    Raises:
        NotFoundError: a scoped key of another instance (404, exactly as for a missing instance).
    """
    principal.require_instance(path_instance(request))
    return principal


async def require_admin(principal: PrincipalDep) -> Principal:
    """The caller, when it holds the admin key.

    Raises:
        PermissionDeniedError: a scoped key (403), whatever instance the path names: nothing is looked up first.
    """
    principal.require_admin()
    return principal


def scoped_instance_filter(principal: Principal, instance_name: str | None) -> str:
    """The instance filter a list really uses: a scoped key sees its own instance only (naming another one is a 404,
    as for a missing instance); the admin's filter is kept ("" for all)."""
    if not principal.is_scoped:
        return instance_name or ""
    if instance_name:
        principal.require_instance(instance_name)
    return principal.instance_name


InstanceAccess = Depends(require_instance_access)
"""For `dependencies=[...]`: the route acts on the instance in its path, which the caller must reach."""
AdminOnly = Depends(require_admin)
"""For `dependencies=[...]`: only the admin key may call the route."""


async def needs_api_key_and_lacks_it(request: Request) -> bool:
    """True for a protected /api/v1 path without a valid key.

    FastAPI decodes a JSON body before it runs dependencies, so a non-JSON body would otherwise be answered
    400 before the key is checked; the error handler asks this first so an anonymous caller only ever sees 401.
    A key that cannot be checked now (router down) counts as lacking: the anonymous caller still sees only 401.
    """
    path = request.url.path
    if not path.startswith("/api/v1/") or path.startswith("/api/v1/webhook/"):
        return False
    try:
        return await principal_of_key(request.app, request.headers.get(API_KEY_HEADER, "")) is None
    except OmniError:
        return True
