"""A whole mesh on this machine, started programmatically on free ports with its own data directory.

The demo, the benchmark and the end-to-end tests use it: the same launcher and processes as `make run`, but with a
clean environment (nothing from a developer's .env or shell leaks in: every setting the processes read is set here)
so several meshes can run side by side.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import aiohttp
from cryptography.fernet import Fernet

from launcher.mesh_token import with_mesh_token
from launcher.supervisor import Supervisor, default_specs

REPO_ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class LocalMesh:
    """The four services and the gateway as child processes, plus an HTTP client for the public API."""

    def __init__(
        self,
        data_dir: Path,
        *,
        api_key: str,
        database_url: str = "",
        log_level: str = "WARNING",
        extra_env: dict[str, str] | None = None,
        prefix_output: bool = True,
    ) -> None:
        self.data_dir = data_dir
        self.api_key = api_key
        self.webhook_secrets: dict[str, str] = {}
        """Each instance's webhook secret, as its create response revealed it."""
        self.ports = {name: free_port() for name in ("ingress", "router", "channels", "tracing", "api")}
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTOMAGIK_", "OMNI_"))}
        env.update(
            {
                "ENVIRONMENT": "test",
                "LOG_LEVEL": log_level,
                "AUTOMAGIK_OMNI_API_KEY": api_key,
                "AUTOMAGIK_OMNI_API_HOST": "127.0.0.1",
                "AUTOMAGIK_OMNI_API_PORT": str(self.ports["api"]),
                "AUTOMAGIK_OMNI_SQLITE_DATABASE_PATH": str(data_dir / "automagik-omni.db"),
                "AUTOMAGIK_OMNI_DATABASE_URL": database_url,
                "AUTOMAGIK_OMNI_SECRET_KEY": Fernet.generate_key().decode(),
                "AUTOMAGIK_OMNI_ENABLE_TRACING": "true",
                "AUTOMAGIK_OMNI_SPAN_EXPORT_INTERVAL_MS": "200",
                # Webhooks Omni registers with Evolution (webhook/set) point at this mesh's gateway.
                "AUTOMAGIK_OMNI_PUBLIC_URL": f"http://127.0.0.1:{self.ports['api']}",
            }
        )
        for service in ("ingress", "router", "channels", "tracing"):
            env[f"AUTOMAGIK_OMNI_{service.upper()}_GRPC_PORT"] = str(self.ports[service])
        env.update(extra_env or {})
        env = with_mesh_token(env, read_dotenv=False)
        self.env = env
        self.base_url = f"http://127.0.0.1:{self.ports['api']}"
        self.supervisor = Supervisor(default_specs(env), env=env, cwd=str(REPO_ROOT), prefix_output=prefix_output)
        self._http: aiohttp.ClientSession | None = None

    async def start(self, timeout: float = 60.0) -> None:
        """Start every process and wait until all are healthy."""
        await self.supervisor.start()
        await self.supervisor.wait_healthy(timeout=timeout)
        self._http = aiohttp.ClientSession(base_url=self.base_url, headers={"x-api-key": self.api_key})

    async def stop(self) -> None:
        if self._http is not None:
            await self._http.close()
        await self.supervisor.stop()

    @property
    def client(self) -> aiohttp.ClientSession:
        """An HTTP client for the public API, with the admin key."""
        assert self._http is not None, "mesh not started"
        return self._http

    def webhook_url(self, instance: str) -> str:
        """Where Evolution posts the webhooks of `instance`, with the instance's webhook secret as the opt-in
        `?secret=` when this mesh created it (hand-made posts; the bench sends `webhook_headers` instead)."""
        url = f"{self.base_url}/api/v1/webhook/evolution/{instance}"
        secret = self.webhook_secrets.get(instance)
        return f"{url}?secret={secret}" if secret else url

    def webhook_headers(self, instance: str) -> dict[str, str]:
        """The header Omni registers in Evolution for `instance` (x-omni-webhook-secret)."""
        secret = self.webhook_secrets.get(instance)
        return {"x-omni-webhook-secret": secret} if secret else {}

    async def create_instance(self, **fields: Any) -> dict[str, Any]:
        """POST /api/v1/instances; fails loudly unless 201."""
        async with self.client.post("/api/v1/instances", json=fields) as response:
            body: dict[str, Any] = await response.json()
            if response.status != 201:
                raise RuntimeError(f"instance creation failed ({response.status}): {body}")
            if body.get("webhook_secret"):
                self.webhook_secrets[body["name"]] = body["webhook_secret"]
            return body

    async def get_json(self, path: str, **params: Any) -> tuple[int, Any]:
        """GET a public API path; returns (status, JSON body)."""
        async with self.client.get(path, params=params) as response:
            return response.status, await response.json()
