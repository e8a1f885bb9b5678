"""Supervises the mesh processes: start in dependency order, wait until healthy, restart what dies, stop all.

`make run` uses it through `python -m launcher`; the end-to-end tests use the same class, so they start the mesh
exactly the way a user does (and can SIGKILL one service to watch it come back).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from servicekit.mesh_auth import MTLS_VARIABLES, SERVER_NAME_VARIABLE, MeshCredentials, TlsFiles

log = logging.getLogger("launcher")

GRPC_SERVICES = ("tracing", "router", "channels", "ingress")
"""Start order: tracing first so the others' spans have somewhere to go, ingress last so it dispatches to a router."""
ALL_PROCESSES = (*GRPC_SERVICES, "gateway")


@dataclass
class ProcessSpec:
    """How to run and probe one process."""

    name: str
    module: str
    probe: str
    """host:port of the gRPC health service, or an http:// URL answering 2xx when healthy."""


@dataclass
class _Running:
    spec: ProcessSpec
    process: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    restarts: int = 0
    backoff: float = 0.5
    pumps: list[asyncio.Task[None]] = field(default_factory=list)


def default_specs(env: Mapping[str, str]) -> list[ProcessSpec]:
    """The mesh as `make run` starts it, probed on the ports the environment configures."""

    def port(service: str, default: int) -> str:
        return env.get(f"AUTOMAGIK_OMNI_{service.upper()}_GRPC_PORT", str(default))

    specs = [
        ProcessSpec(name, f"services.{name}", f"127.0.0.1:{port(name, default)}")
        for name, default in zip(GRPC_SERVICES, (50054, 50052, 50053, 50051), strict=True)
    ]
    api_port = env.get("AUTOMAGIK_OMNI_API_PORT", "8882")
    specs.append(ProcessSpec("gateway", "gateway", f"http://127.0.0.1:{api_port}/health"))
    return specs


class Supervisor:
    """Runs each spec as `python -m <module>`, restarting it with back-off when it exits unexpectedly."""

    def __init__(
        self,
        specs: list[ProcessSpec],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        prefix_output: bool = True,
        max_backoff: float = 8.0,
    ) -> None:
        self._specs = specs
        self._env = dict(env if env is not None else os.environ)
        self._cwd = cwd
        self._prefix_output = prefix_output
        self._max_backoff = max_backoff
        self._running = {spec.name: _Running(spec) for spec in specs}
        self._stopping = False
        self._watchers: list[asyncio.Task[None]] = []

    def pid(self, name: str) -> int | None:
        """The current process id of `name`, if running."""
        process = self._running[name].process
        return process.pid if process is not None and process.returncode is None else None

    def restarts(self, name: str) -> int:
        """How often `name` was restarted after an unexpected exit."""
        return self._running[name].restarts

    async def start(self) -> None:
        """Start every process in order without waiting: mesh calls wait for their peer to be ready."""
        for spec in self._specs:
            await self._spawn(self._running[spec.name])
            self._watchers.append(asyncio.create_task(self._watch(self._running[spec.name]), name=f"watch-{spec.name}"))

    async def wait_healthy(self, timeout: float = 60.0) -> None:
        """Return when every process answers its health probe; raise TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        pending = {spec.name for spec in self._specs}
        while pending:
            for name in sorted(pending):
                if await self.is_healthy(name):
                    pending.discard(name)
            if not pending:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"not healthy after {timeout:.0f}s: {', '.join(sorted(pending))}")
            await asyncio.sleep(0.2)

    async def is_healthy(self, name: str) -> bool:
        """True when `name` answers its probe (gRPC SERVING or HTTP 2xx)."""
        probe = self._running[name].spec.probe
        if probe.startswith("http"):
            try:
                async with (
                    aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session,
                    session.get(probe) as response,
                ):
                    return 200 <= response.status < 300
            except (aiohttp.ClientError, TimeoutError):
                return False
        async with self._probe_channel(probe) as channel:
            try:
                response = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1.0)
            except grpc.aio.AioRpcError:
                return False
            return bool(response.status == health_pb2.HealthCheckResponse.SERVING)

    def _probe_channel(self, address: str) -> grpc.aio.Channel:
        """A channel for health probes: plain, or TLS with the mesh certificate when the mesh speaks mTLS (health
        needs no credential, but an mTLS server accepts no plain connection)."""
        files = [self._env.get(name, "") for name in MTLS_VARIABLES]
        if not all(files):
            return grpc.aio.insecure_channel(address)
        tls = MeshCredentials("launcher", tls=TlsFiles(*(Path(f) for f in files)))
        options = [("grpc.ssl_target_name_override", name)] if (name := self._env.get(SERVER_NAME_VARIABLE)) else []
        credentials = tls.channel_credentials()
        assert credentials is not None
        return grpc.aio.secure_channel(address, credentials, options=options)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send `sig` to `name` (tests use SIGKILL to prove nothing is lost); the watcher restarts it."""
        process = self._running[name].process
        if process is not None and process.returncode is None:
            process.send_signal(sig)

    async def stop(self, timeout: float = 12.0) -> None:
        """Stop the mesh: SIGTERM everything but tracing (reverse start order), then tracing once the others have
        flushed their last spans to it; SIGKILL whatever is still up when `timeout` runs out."""
        self._stopping = True
        for watcher in self._watchers:
            watcher.cancel()
        for watcher in self._watchers:
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        deadline = time.monotonic() + timeout
        entries = list(reversed(list(self._running.values())))
        last = [e for e in entries if e.spec.name == "tracing"]
        await self._terminate([e for e in entries if e.spec.name != "tracing"], deadline)
        await self._terminate(last, deadline)
        for entry in self._running.values():
            for pump in entry.pumps:
                with contextlib.suppress(asyncio.CancelledError):
                    await pump

    async def _terminate(self, entries: list[_Running], deadline: float) -> None:
        running = [e for e in entries if e.process is not None and e.process.returncode is None]
        for entry in running:
            assert entry.process is not None
            with contextlib.suppress(ProcessLookupError):
                entry.process.send_signal(signal.SIGTERM)
        for entry in running:
            assert entry.process is not None
            try:
                await asyncio.wait_for(entry.process.wait(), max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                log.warning("%s did not stop in time; killing it", entry.spec.name)
                with contextlib.suppress(ProcessLookupError):
                    entry.process.kill()
                await entry.process.wait()

    async def _spawn(self, entry: _Running) -> None:
        output = asyncio.subprocess.PIPE if self._prefix_output else None
        entry.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            entry.spec.module,
            env=self._env,
            cwd=self._cwd,
            stdout=output,
            stderr=asyncio.subprocess.STDOUT if self._prefix_output else None,
            start_new_session=True,
        )
        entry.started_at = time.monotonic()
        if self._prefix_output and entry.process.stdout is not None:
            entry.pumps = [asyncio.create_task(_pump(entry.spec.name, entry.process.stdout))]
        log.info("started %s (pid %d)", entry.spec.name, entry.process.pid)

    async def _watch(self, entry: _Running) -> None:
        while not self._stopping:
            assert entry.process is not None
            code = await entry.process.wait()
            if self._stopping:
                return
            if time.monotonic() - entry.started_at > 30:
                entry.backoff = 0.5
            log.warning("%s exited with %s; restarting in %.1fs", entry.spec.name, code, entry.backoff)
            await asyncio.sleep(entry.backoff)
            entry.backoff = min(entry.backoff * 2, self._max_backoff)
            entry.restarts += 1
            await self._spawn(entry)


async def _pump(name: str, stream: asyncio.StreamReader) -> None:
    """Copy a child's output to ours, each line prefixed with the process name."""
    tag = f"{name:<8}| ".encode()
    out = sys.stdout.buffer
    while line := await stream.readline():
        out.write(tag + line)
        out.flush()
