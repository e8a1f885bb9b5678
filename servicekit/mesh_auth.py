"""The mesh's own credential, and who may call which RPC.

The gRPC ports are not open doors. Every call between services proves it comes from the mesh, in one of two ways:

* a shared token (`AUTOMAGIK_OMNI_MESH_TOKEN`) sent as metadata `x-omni-mesh-token`, with the calling service named
  in `x-omni-caller`; or
* mutual TLS: servers only accept clients whose certificate the mesh CA signed, and the caller is the certificate's
  common name (which a client cannot choose, unlike a header).

Direct gRPC clients (scripts, other systems) may call the *public* RPCs — the ones the REST API also offers — with
an API key in `x-api-key`: the admin key, or a key scoped to one instance. Everything else is internal: only the
mesh may call it, whatever key is shown. The server's interceptor turns the caller into a `Principal` for the
duration of the RPC (see `servicekit.principals`), so the servicers ask one question whoever called.

Health (and reflection, when it is served) stays open so probes and tools work without a secret.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from servicekit.errors import OmniError
from servicekit.principals import Principal, acting_as
from servicekit.settings import MeshSettings

MESH_TOKEN_HEADER = "x-omni-mesh-token"
CALLER_HEADER = "x-omni-caller"
API_KEY_HEADER = "x-api-key"

TOKEN_VARIABLE = "AUTOMAGIK_OMNI_MESH_TOKEN"
MTLS_VARIABLES = ("AUTOMAGIK_OMNI_MTLS_CERT", "AUTOMAGIK_OMNI_MTLS_KEY", "AUTOMAGIK_OMNI_MTLS_CA")
SERVER_NAME_VARIABLE = "AUTOMAGIK_OMNI_MTLS_SERVER_NAME"
MIN_PRODUCTION_TOKEN_CHARS = 32
"""A production token shorter than this is refused: it is the only thing between the network and every tenant."""

MESH_SERVICES = frozenset({"gateway", "ingress", "router", "channels", "tracing"})
"""The names a mesh caller may have (the `x-omni-caller` value, or a certificate's common name)."""

OPEN_SERVICES = (
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
)
"""Served without any credential: probes must work, and reflection is registered only when enabled."""

PUBLIC_RPCS: Mapping[str, frozenset[str]] = {
    "omni.router.v1.RouterService": frozenset(
        {
            "SendText",
            "SendMedia",
            "SendReaction",
            "SendLocation",
            "SendContact",
            "SendPresence",
            "FetchProfile",
            "CreateInstance",
            "GetInstance",
            "ListInstances",
            "UpdateInstance",
            "DeleteInstance",
            "RotateWebhookSecret",
            "RotateAgentSigningSecret",
            "CreateApiKey",
            "ListApiKeys",
            "RevokeApiKey",
        }
    ),
    "omni.router.v1.AccessService": frozenset({"ListRules", "CreateRule", "DeleteRule", "CheckAccess"}),
    "omni.router.v1.UsersService": frozenset(
        {"ListUsers", "GetUser", "LinkUsers", "DeleteUser", "ListSessions", "GetSession", "ResetSession"}
    ),
    "omni.tracing.v1.TracingService": frozenset({"ListTraces", "GetTrace", "GetTraceAnalytics", "CleanupTraces"}),
    "omni.ingress.v1.IngressService": frozenset({"ListDeadLetters", "RedeliverDeadLetter", "ListBots"}),
    "omni.channels.v1.ChannelsService": frozenset(
        {
            "GetConnectionStatus",
            "ListChannels",
            "ListContacts",
            "GetContact",
            "ListChats",
            "GetChat",
            "ManageConnection",
            "DiscoverInstances",
        }
    ),
}
"""The RPCs an API key may call (service full name -> method names): what the REST API offers, no more. Every
other RPC of the mesh (RouteMessage, WatchInstances, AuthenticateApiKey, ReceiveWebhook, IngestMessage, SendMessage,
PurgeInstance, OTLP Export, ...) is internal."""


def split_method(method: str) -> tuple[str, str]:
    """("omni.router.v1.RouterService", "SendText") from "/omni.router.v1.RouterService/SendText"."""
    service, _, name = method.lstrip("/").rpartition("/")
    return service, name


def is_public(method: str) -> bool:
    """True when an API key may call `method` (a full gRPC method path)."""
    service, name = split_method(method)
    return name in PUBLIC_RPCS.get(service, frozenset())


def is_open(method: str) -> bool:
    """True for health and reflection, which need no credential."""
    return split_method(method)[0] in OPEN_SERVICES


class MeshAuthError(RuntimeError):
    """The mesh credential is missing or unusable: the process refuses to start rather than serve open ports."""


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of mutual TLS: this process's certificate and key, and the CA that signs every mesh certificate."""

    cert: Path
    key: Path
    ca: Path

    def read(self) -> tuple[bytes, bytes, bytes]:
        """(certificate chain, private key, CA bundle); a missing file is a `MeshAuthError` naming it."""
        try:
            return self.cert.read_bytes(), self.key.read_bytes(), self.ca.read_bytes()
        except OSError as exc:
            raise MeshAuthError(f"cannot read an mTLS file ({exc}); check {', '.join(MTLS_VARIABLES)}") from None


@dataclass(frozen=True)
class MeshCredentials:
    """What one process presents to its peers and accepts from them.

    `service` is this process's name in the mesh; `token` the shared token (may be empty with mTLS); `tls` the
    certificate files (None without mTLS); `server_name` the name clients expect in server certificates when it
    differs from the host they dial.
    """

    service: str
    token: str = ""
    tls: TlsFiles | None = None
    server_name: str = ""

    @classmethod
    def from_settings(cls, settings: MeshSettings, service: str) -> MeshCredentials:
        """The credentials `settings` configure for `service`; `require()` says whether they are usable."""
        files = (settings.mtls_cert, settings.mtls_key, settings.mtls_ca)
        tls = TlsFiles(*(Path(f) for f in files)) if all(files) else None
        if any(files) and not all(files):
            missing = [name for name, value in zip(MTLS_VARIABLES, files, strict=True) if not value]
            raise MeshAuthError(f"mTLS is half configured: {', '.join(missing)} not set")
        return cls(service=service, token=settings.mesh_token, tls=tls, server_name=settings.mtls_server_name)

    @property
    def configured(self) -> bool:
        """True when the process has a way to prove it belongs to the mesh."""
        return bool(self.token) or self.tls is not None

    def require(self, *, production: bool) -> None:
        """Raise `MeshAuthError` (with a message naming the variables) unless the mesh is closed."""
        if not self.configured:
            raise MeshAuthError(
                f"{TOKEN_VARIABLE} is not set: the gRPC ports would be open to anyone who reaches them. Set it to a "
                f"long random value shared by every service (`make run` generates one per run), or configure mTLS "
                f"with {', '.join(MTLS_VARIABLES)}"
            )
        if production and self.tls is None and len(self.token) < MIN_PRODUCTION_TOKEN_CHARS:
            raise MeshAuthError(
                f"{TOKEN_VARIABLE} must have at least {MIN_PRODUCTION_TOKEN_CHARS} characters in production"
            )
        if self.tls is not None:
            self.tls.read()

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """The metadata every outgoing call carries: the token (when there is one) and this service's name."""
        pairs = [(CALLER_HEADER, self.service)]
        if self.token:
            pairs.append((MESH_TOKEN_HEADER, self.token))
        return tuple(pairs)

    def channel_credentials(self) -> grpc.ChannelCredentials | None:
        """TLS credentials presenting this process's certificate (None without mTLS: a plain channel)."""
        if self.tls is None:
            return None
        cert, key, ca = self.tls.read()
        return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)

    def channel_options(self) -> list[tuple[str, Any]]:
        """Extra channel options: the expected server certificate name, when overridden."""
        if self.tls is not None and self.server_name:
            return [("grpc.ssl_target_name_override", self.server_name)]
        return []

    def server_credentials(self) -> grpc.ServerCredentials | None:
        """TLS credentials that require a client certificate signed by the mesh CA (None without mTLS)."""
        if self.tls is None:
            return None
        cert, key, ca = self.tls.read()
        return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=True)


KeyResolver = Callable[[str], Awaitable[Principal | None]]
"""Resolves a presented scoped API key to its principal (None: no such key). Raises `OmniError` when it cannot
tell (the router is unreachable)."""


@dataclass(frozen=True)
class ServerAuth:
    """What a server checks: the mesh credential, the admin key, and how scoped keys are resolved."""

    credentials: MeshCredentials
    admin_key: str
    resolve_key: KeyResolver


INTERNAL_ONLY = "this RPC is internal to the mesh"

CALLER_AWARE_INTERNAL = frozenset({"/omni.router.v1.RouterService/WatchInstances"})
"""Internal RPCs whose servicer reads the caller (which secrets a watcher may see); every other internal RPC is
served without a per-call principal (the fast path of `MeshAuthInterceptor`)."""


class _Refused(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class MeshAuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Authenticates every call (health and reflection aside) and makes its caller the current principal.

    It must be the outermost interceptor: a refused call starts no span and reaches no servicer code.
    """

    def __init__(self, auth: ServerAuth) -> None:
        self._auth = auth
        self._token = auth.credentials.token.encode()
        self._admin_key = auth.admin_key.encode()
        self._mtls = auth.credentials.tls is not None

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or is_open(method):
            return handler
        if not self._mtls and method not in CALLER_AWARE_INTERNAL and not is_public(method):
            # The message path (RouteMessage, ReceiveWebhook, SendMessage, ...): decided here from the call's
            # metadata, and served unwrapped, because no internal servicer asks who called it.
            metadata = _metadata_dict(handler_call_details.invocation_metadata)
            try:
                caller = self._mesh_caller(None, metadata)
            except _Refused as refused:
                return _aborting_handler(handler, refused)
            if caller is None:
                return _aborting_handler(handler, _Refused(grpc.StatusCode.UNAUTHENTICATED, INTERNAL_ONLY))
            return handler
        public = is_public(method)
        authenticate = self._authenticate
        if handler.unary_unary is not None:
            unary: Any = handler.unary_unary

            async def unary_unary(request: Any, context: Any) -> Any:
                principal = await authenticate(context, public)
                with acting_as(principal):
                    return await unary(request, context)

            return grpc.unary_unary_rpc_method_handler(
                unary_unary, handler.request_deserializer, handler.response_serializer
            )
        if handler.unary_stream is not None:
            streaming: Any = handler.unary_stream

            async def unary_stream(request: Any, context: Any) -> AsyncIterator[Any]:
                principal = await authenticate(context, public)
                with acting_as(principal):
                    async for item in streaming(request, context):
                        yield item

            return grpc.unary_stream_rpc_method_handler(
                unary_stream, handler.request_deserializer, handler.response_serializer
            )
        # No RPC of the mesh streams requests; refuse rather than serve one unchecked.
        return _refusing_handler(handler)

    async def _authenticate(self, context: Any, public: bool) -> Principal:
        """The caller's principal, or abort the call (UNAUTHENTICATED, or UNAVAILABLE when a key cannot be checked)."""
        try:
            return await self._principal(context, public)
        except _Refused as refused:
            await context.abort(refused.code, refused.message)
            raise AssertionError("unreachable") from None

    async def _principal(self, context: Any, public: bool) -> Principal:
        metadata = _metadata_dict(context.invocation_metadata())
        caller = self._mesh_caller(context, metadata)
        api_key = metadata.get(API_KEY_HEADER, "")
        if caller is not None and not (public and api_key):
            return Principal("mesh", service=caller)
        if not public:
            raise _Refused(grpc.StatusCode.UNAUTHENTICATED, INTERNAL_ONLY)
        if not api_key:
            raise _Refused(grpc.StatusCode.UNAUTHENTICATED, f"missing {API_KEY_HEADER}")
        # A mesh service may also act for a key holder it forwards: the key then decides what the call reaches.
        return await self._principal_for_key(api_key)

    def _mesh_caller(self, context: Any, metadata: Mapping[str, str]) -> str | None:
        """The mesh service calling, None when the call carries no mesh credential; a wrong token is refused.
        `context` is only read under mTLS (the peer certificate)."""
        if self._mtls and context is not None:
            names = (context.auth_context() or {}).get("x509_common_name") or []
            name = names[0].decode() if names else ""
            if name in MESH_SERVICES:
                return name
        presented = metadata.get(MESH_TOKEN_HEADER)
        if presented is None:
            return None
        if not self._token or not hmac.compare_digest(presented.encode(), self._token):
            raise _Refused(grpc.StatusCode.UNAUTHENTICATED, "invalid mesh credential")
        caller = metadata.get(CALLER_HEADER, "")
        if caller not in MESH_SERVICES:
            raise _Refused(grpc.StatusCode.UNAUTHENTICATED, f"unknown mesh caller {caller!r}")
        return caller

    async def _principal_for_key(self, api_key: str) -> Principal:
        presented = api_key.encode()
        if self._admin_key and hmac.compare_digest(presented, self._admin_key):
            return Principal("admin")
        try:
            principal = await self._auth.resolve_key(api_key)
        except OmniError as exc:
            raise _Refused(grpc.StatusCode.UNAVAILABLE, f"cannot check the API key now: {exc.message}") from None
        if principal is None or principal.kind == "mesh":
            raise _Refused(grpc.StatusCode.UNAUTHENTICATED, "invalid API key")
        return principal


def _metadata_dict(pairs: Any) -> dict[str, str]:
    """The call's text metadata by key (the first value of a repeated key)."""
    metadata: dict[str, str] = {}
    for key, value in pairs or ():
        if isinstance(value, str):
            metadata.setdefault(key, value)
    return metadata


def _aborting_handler(handler: grpc.RpcMethodHandler[Any, Any], refused: _Refused) -> grpc.RpcMethodHandler[Any, Any]:
    """A handler of the same shape as `handler` that refuses the call before any servicer (or span) code runs."""

    async def refuse(request: Any, context: Any) -> Any:
        await context.abort(refused.code, refused.message)

    async def refuse_stream(request: Any, context: Any) -> AsyncIterator[Any]:
        await context.abort(refused.code, refused.message)
        yield  # pragma: no cover - abort raises

    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            refuse_stream, handler.request_deserializer, handler.response_serializer
        )
    return grpc.unary_unary_rpc_method_handler(refuse, handler.request_deserializer, handler.response_serializer)


def _refusing_handler(handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
    async def refuse(request: Any, context: Any) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "request-streaming RPCs are not served")

    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(refuse, handler.request_deserializer, handler.response_serializer)
    return grpc.stream_stream_rpc_method_handler(refuse, handler.request_deserializer, handler.response_serializer)


def mesh_credentials_or_exit(settings: MeshSettings, service: str) -> MeshCredentials:
    """This process's mesh credentials; exits (status 2, with the reason logged) when the mesh would be open."""
    try:
        credentials = MeshCredentials.from_settings(settings, service)
        credentials.require(production=settings.is_production)
    except MeshAuthError as exc:
        logging.getLogger(f"services.{service}").critical("cannot start: %s", exc)
        raise SystemExit(2) from None
    return credentials
