"""Forwarding of received spans to the operator's own OTLP collector (Jaeger, Tempo, Honeycomb...).

Why here and not a second exporter in every service: the tracing service already receives every span of the mesh,
redacted and capped at the source, so one forwarder configured in one place sends the same spans the trace API
shows. Forwarding must never slow ingestion nor grow memory when the collector is down: requests wait in a bounded
queue, a single task sends them in batches, and what does not fit (or fails) is dropped and counted
(`omni_otlp_forward_dropped_spans_total`).

Configuration is the standard OpenTelemetry environment (read as is, no AUTOMAGIK_OMNI_ prefix):
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL
(`grpc`, the default, or `http/protobuf`), OTEL_EXPORTER_OTLP_[TRACES_]HEADERS (`k=v,k2=v2`, URL-encoded values),
OTEL_EXPORTER_OTLP_[TRACES_]TIMEOUT (milliseconds) and OTEL_EXPORTER_OTLP_[TRACES_]INSECURE.
"""

from __future__ import annotations

import asyncio
import logging
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import aiohttp
import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from servicekit.metrics import OTLP_FORWARD_DROPPED, OTLP_FORWARDED
from servicekit.tasks import cancel_and_wait

log = logging.getLogger(__name__)

GRPC = "grpc"
HTTP_PROTOBUF = "http/protobuf"
PROTOCOLS = (GRPC, HTTP_PROTOBUF)

Sender = Callable[[trace_service_pb2.ExportTraceServiceRequest], Awaitable[None]]


@dataclass(frozen=True)
class CollectorTarget:
    """Where and how to forward, as the OTEL_EXPORTER_OTLP_* variables say."""

    endpoint: str
    protocol: str = GRPC
    headers: dict[str, str] = field(default_factory=dict)
    timeout_seconds: float = 10.0
    insecure: bool | None = None


def _pick(env: Mapping[str, str], suffix: str) -> str:
    """The traces-specific variable when set, else the general one (the OTel precedence)."""
    return env.get(f"OTEL_EXPORTER_OTLP_TRACES_{suffix}") or env.get(f"OTEL_EXPORTER_OTLP_{suffix}") or ""


def parse_headers(text: str) -> dict[str, str]:
    """`k=v,k2=v2` (values URL-encoded, as the OTel spec says) → a dict; malformed pairs are skipped."""
    headers: dict[str, str] = {}
    for pair in text.split(","):
        key, sep, value = pair.partition("=")
        if sep and key.strip():
            headers[key.strip().lower()] = urllib.parse.unquote(value.strip())
    return headers


def target_from_env(env: Mapping[str, str]) -> CollectorTarget | None:
    """The configured collector, None when no endpoint is set; ValueError for an unknown protocol (a typo must stop
    the service at start-up, not silently send nothing)."""
    traces_endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    base_endpoint = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    if not traces_endpoint and not base_endpoint:
        return None
    protocol = (_pick(env, "PROTOCOL").strip() or GRPC).lower()
    if protocol not in PROTOCOLS:
        raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL must be one of {', '.join(PROTOCOLS)}, not {protocol!r}")
    endpoint = traces_endpoint
    if not endpoint:
        # The general endpoint is a base URL: over HTTP the traces path is appended, gRPC uses it as is.
        endpoint = base_endpoint.rstrip("/") + "/v1/traces" if protocol == HTTP_PROTOBUF else base_endpoint
    timeout_text = _pick(env, "TIMEOUT").strip()
    insecure_text = _pick(env, "INSECURE").strip().lower()
    return CollectorTarget(
        endpoint=endpoint,
        protocol=protocol,
        headers=parse_headers(_pick(env, "HEADERS")),
        timeout_seconds=float(timeout_text) / 1000 if timeout_text else 10.0,
        insecure=None if not insecure_text else insecure_text in ("true", "1", "yes"),
    )


def _grpc_sender(target: CollectorTarget) -> tuple[Sender, Callable[[], Awaitable[None]]]:
    parsed = urllib.parse.urlparse(target.endpoint if "://" in target.endpoint else f"//{target.endpoint}")
    address = parsed.netloc or target.endpoint
    insecure = target.insecure if target.insecure is not None else parsed.scheme != "https"
    channel = (
        grpc.aio.insecure_channel(address)
        if insecure
        else grpc.aio.secure_channel(address, grpc.ssl_channel_credentials())
    )
    stub = trace_service_pb2_grpc.TraceServiceStub(channel)  # type: ignore[no-untyped-call]
    metadata = tuple(target.headers.items())

    async def send(request: trace_service_pb2.ExportTraceServiceRequest) -> None:
        await stub.Export(request, metadata=metadata, timeout=target.timeout_seconds)

    async def close() -> None:
        await channel.close(None)

    return send, close


def _http_sender(target: CollectorTarget) -> tuple[Sender, Callable[[], Awaitable[None]]]:
    session: aiohttp.ClientSession | None = None
    headers = {**target.headers, "content-type": "application/x-protobuf"}

    async def send(request: trace_service_pb2.ExportTraceServiceRequest) -> None:
        nonlocal session
        if session is None:
            session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=target.timeout_seconds))
        async with session.post(target.endpoint, data=request.SerializeToString(), headers=headers) as response:
            if response.status >= 300:
                raise RuntimeError(f"collector answered HTTP {response.status}")

    async def close() -> None:
        if session is not None:
            await session.close()

    return send, close


def span_count(request: trace_service_pb2.ExportTraceServiceRequest) -> int:
    """How many spans an Export request carries."""
    return sum(len(scope.spans) for rs in request.resource_spans for scope in rs.scope_spans)


class OtlpForwarder:
    """A bounded queue of Export requests and the one task that sends them on, merged into batches."""

    def __init__(
        self,
        send: Sender,
        *,
        close: Callable[[], Awaitable[None]] | None = None,
        max_queued_requests: int = 1000,
        max_batch_spans: int = 2048,
    ) -> None:
        self._send = send
        self._close = close
        self._queue: asyncio.Queue[trace_service_pb2.ExportTraceServiceRequest] = asyncio.Queue(max_queued_requests)
        self._max_batch_spans = max_batch_spans
        self._task: asyncio.Task[None] | None = None
        self._last_warning = 0.0
        self.forwarded_spans = 0
        self.dropped_spans = 0

    @classmethod
    def for_target(cls, target: CollectorTarget) -> OtlpForwarder:
        """A forwarder speaking the target's protocol."""
        send, close = _grpc_sender(target) if target.protocol == GRPC else _http_sender(target)
        return cls(send, close=close)

    def offer(self, request: trace_service_pb2.ExportTraceServiceRequest) -> None:
        """Queue a request without waiting; when the queue is full it is dropped and counted."""
        try:
            self._queue.put_nowait(request)
        except asyncio.QueueFull:
            self._dropped(span_count(request), "queue full")

    def start(self) -> None:
        """Start the sending task (call from the running loop)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="otlp-forwarder")

    async def stop(self) -> None:
        """Stop sending; whatever is still queued is dropped (shutdown must not wait on a dead collector)."""
        await cancel_and_wait(self._task)
        self._task = None
        if self._close is not None:
            await self._close()

    def _next_batch(
        self, first: trace_service_pb2.ExportTraceServiceRequest
    ) -> trace_service_pb2.ExportTraceServiceRequest:
        batch = trace_service_pb2.ExportTraceServiceRequest()
        batch.resource_spans.extend(first.resource_spans)
        spans = span_count(first)
        while spans < self._max_batch_spans and not self._queue.empty():
            more = self._queue.get_nowait()
            batch.resource_spans.extend(more.resource_spans)
            spans += span_count(more)
        return batch

    async def _run(self) -> None:
        while True:
            batch = self._next_batch(await self._queue.get())
            count = span_count(batch)
            try:
                await self._send(batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._dropped(count, str(exc) or type(exc).__name__)
                continue
            self.forwarded_spans += count
            OTLP_FORWARDED.inc(count)

    def _dropped(self, count: int, reason: str) -> None:
        self.dropped_spans += count
        OTLP_FORWARD_DROPPED.inc(count)
        now = time.monotonic()
        if now - self._last_warning > 60:
            # At most one line a minute: a collector that is down must not flood the log either.
            self._last_warning = now
            log.warning("OTLP forwarding dropped %d spans: %s", count, reason)
