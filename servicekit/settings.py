"""Settings shared by every process of the mesh.

Every service reads the same environment (the `AUTOMAGIK_OMNI_*` names of the public contract plus the mesh
addresses), so one `.env` configures the whole mesh. A service's own settings class subclasses `MeshSettings`.
Real environment variables win over the `.env` file.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class MeshSettings(BaseSettings):
    """Configuration common to all services and the gateway."""

    model_config = SettingsConfigDict(
        env_prefix="AUTOMAGIK_OMNI_", env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True
    )

    environment: str = Field(default="development", validation_alias=AliasChoices("ENVIRONMENT"))
    """development, test or production; production refuses insecure defaults."""
    log_level: str = Field(default="INFO", validation_alias=AliasChoices("LOG_LEVEL"))
    """Python logging level name."""
    database_url: str = ""
    """PostgreSQL URL (postgresql://user:pass@host:5432/db). Takes precedence over SQLite when set."""
    sqlite_database_path: str = "./data/automagik-omni.db"
    """Base SQLite path; each service derives its own file from it (automagik-omni-<service>.db)."""
    enable_tracing: bool = True
    """Export OpenTelemetry spans to the tracing service."""
    grpc_host: str = "127.0.0.1"
    """Interface the gRPC servers bind to."""
    ingress_grpc_port: int = 50051
    router_grpc_port: int = 50052
    channels_grpc_port: int = 50053
    tracing_grpc_port: int = 50054
    ingress_address: str = ""
    """host:port of the ingress service; defaults to 127.0.0.1:<ingress_grpc_port>."""
    router_address: str = ""
    """host:port of the router service; defaults to 127.0.0.1:<router_grpc_port>."""
    channels_address: str = ""
    """host:port of the channels service; defaults to 127.0.0.1:<channels_grpc_port>."""
    tracing_address: str = ""
    """host:port of the tracing service (OTLP and queries); defaults to 127.0.0.1:<tracing_grpc_port>."""
    rpc_timeout_seconds: float = 10.0
    """Default deadline of a mesh call that does no slow work."""
    shutdown_grace_seconds: float = 8.0
    """How long in-flight RPCs may run after SIGTERM."""
    span_export_interval_ms: int = 300
    """How often finished spans are shipped to the tracing service."""
    delivery_retention_days: float = 30.0
    """How long finished delivery records (inbox rows, route records, sent outbox parts) are kept: the window in
    which a repeated webhook is still recognised as a duplicate. Dead letters and unfinished work are never
    deleted. 0 keeps everything."""
    discord_api_url: str = "https://discord.com/api/v10"
    """Discord REST base (AUTOMAGIK_OMNI_DISCORD_API_URL): a Discord-compatible server or a simulator may stand in."""
    discord_gateway_url: str = "wss://gateway.discord.gg/"
    """Discord gateway websocket (AUTOMAGIK_OMNI_DISCORD_GATEWAY_URL), likewise."""
    slack_api_url: str = "https://slack.com/api/"
    """Slack Web API base (AUTOMAGIK_OMNI_SLACK_API_URL, ending in "/"): a Slack-compatible server or the simulator
    may stand in; Socket Mode's websocket URL comes from its apps.connections.open."""
    delivery_retention_interval_seconds: float = 3600.0
    """How often ingress, router and channels sweep their delivery records (also once at start-up)."""
    api_key: str = ""
    """The admin key (AUTOMAGIK_OMNI_API_KEY): the gateway checks it on REST, the services on the public RPCs."""
    mesh_token: str = ""
    """The mesh's shared credential (AUTOMAGIK_OMNI_MESH_TOKEN), sent as `x-omni-mesh-token` on every call between
    services; without it (or mTLS) a service refuses to start. `make run` generates one per run when unset."""
    mtls_cert: str = ""
    """PEM certificate of this process (AUTOMAGIK_OMNI_MTLS_CERT); with `mtls_key` and `mtls_ca` the mesh speaks
    mutual TLS and a caller is the common name of its certificate."""
    mtls_key: str = ""
    """PEM private key of `mtls_cert` (AUTOMAGIK_OMNI_MTLS_KEY)."""
    mtls_ca: str = ""
    """PEM CA bundle that signs every mesh certificate (AUTOMAGIK_OMNI_MTLS_CA)."""
    mtls_server_name: str = ""
    """Name the clients expect in the servers' certificates when it differs from the address host."""
    grpc_reflection: bool | None = None
    """gRPC server reflection (AUTOMAGIK_OMNI_GRPC_REFLECTION); default on outside production, always off in it."""
    allow_link_local_urls: bool = False
    """Let instances point agent and Evolution URLs (and agents send media URLs) at link-local and cloud-metadata
    addresses (169.254.0.0/16, fe80::/10, 169.254.169.254, metadata.google.internal, ...); refused by default so a
    tenant cannot read the host's cloud credentials (AUTOMAGIK_OMNI_ALLOW_LINK_LOCAL_URLS). Loopback and private
    addresses are always allowed."""

    def address_of(self, service: str) -> str:
        """host:port where `service` (ingress, router, channels, tracing) listens."""
        explicit: str = getattr(self, f"{service}_address")
        if explicit:
            return explicit
        port: int = getattr(self, f"{service}_grpc_port")
        return f"127.0.0.1:{port}"

    def port_of(self, service: str) -> int:
        """The gRPC port `service` binds to."""
        port: int = getattr(self, f"{service}_grpc_port")
        return port

    def database_url_for(self, service: str) -> str:
        """The database URL of one service: the shared PostgreSQL URL, or its own SQLite file."""
        if self.database_url:
            return self.database_url
        base = Path(self.sqlite_database_path)
        suffix = base.suffix or ".db"
        return f"sqlite:///{base.with_name(f'{base.stem}-{service}{suffix}')}"

    @property
    def data_dir(self) -> Path:
        """Directory holding the SQLite files and the development master key."""
        return Path(self.sqlite_database_path).parent

    @property
    def reflection_enabled(self) -> bool:
        """Serve gRPC reflection: handy with grpcurl in development, a free map of the mesh in production."""
        if self.is_production:
            return False
        return True if self.grpc_reflection is None else self.grpc_reflection

    @property
    def is_production(self) -> bool:
        """True when insecure development defaults must be refused."""
        return self.environment.lower() in {"production", "prod"}
