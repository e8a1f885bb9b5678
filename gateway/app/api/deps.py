"""Request dependencies: settings, the mesh stubs and the API-key check.

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

from gateway.app.config import Settings
from gateway.app.mesh import ChannelsStub, HealthStubMap, IngressStub, Mesh, RouterStub, TracingStub
from servicekit.errors import UnauthenticatedError, UnavailableError

API_KEY_HEADER = "x-api-key"

api_key_scheme = APIKeyHeader(
    name=API_KEY_HEADER,
    scheme_name="ApiKey",
    description="The admin key (AUTOMAGIK_OMNI_API_KEY).",
    auto_error=False,
)
"""Declares the header in the OpenAPI spec (Swagger's Authorize button); the check itself is `require_api_key`."""


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


async def get_ingress_stub(request: Request) -> IngressStub:
    """The IngressService stub."""
    return _mesh(request).ingress


async def get_channels_stub(request: Request) -> ChannelsStub:
    """The ChannelsService stub."""
    return _mesh(request).channels


async def get_tracing_stub(request: Request) -> TracingStub:
    """The TracingService stub."""
    return _mesh(request).tracing


async def get_health_stubs(request: Request) -> HealthStubMap:
    """One grpc.health.v1 stub per mesh service."""
    return _mesh(request).health


SettingsDep = Annotated[Settings, Depends(get_settings)]
RouterStubDep = Annotated[RouterStub, Depends(get_router_stub)]
IngressStubDep = Annotated[IngressStub, Depends(get_ingress_stub)]
ChannelsStubDep = Annotated[ChannelsStub, Depends(get_channels_stub)]
TracingStubDep = Annotated[TracingStub, Depends(get_tracing_stub)]
HealthStubs = Annotated[HealthStubMap, Depends(get_health_stubs)]


async def require_api_key(settings: SettingsDep, provided: Annotated[str | None, Depends(api_key_scheme)]) -> str:
    """Check `x-api-key` against the admin key in constant time.

    Raises:
        UnauthenticatedError: the header is missing or wrong (401).
    """
    if not provided:
        raise UnauthenticatedError("missing x-api-key header", reason="API_KEY_MISSING")
    # Bytes, not str: compare_digest refuses non-ASCII str, and a header may carry any latin-1 byte.
    if not hmac.compare_digest(provided.encode(), settings.api_key.encode()):
        raise UnauthenticatedError("invalid API key", reason="API_KEY_INVALID")
    return provided


ApiKeyDep = Annotated[str, Depends(require_api_key)]


def needs_api_key_and_lacks_it(request: Request) -> bool:
    """True for a protected /api/v1 path without the right key.

    FastAPI decodes a JSON body before it runs dependencies, so a non-JSON body would otherwise be answered
    400 before the key is checked; the error handler asks this first so an anonymous caller only ever sees 401.
    """
    path = request.url.path
    if not path.startswith("/api/v1/") or path.startswith("/api/v1/webhook/"):
        return False
    provided = request.headers.get(API_KEY_HEADER, "")
    settings: Settings = request.app.state.settings
    return not (provided and hmac.compare_digest(provided.encode(), settings.api_key.encode()))
