"""Prometheus metrics of the mesh: the metrics themselves, the mesh-only GetMetrics servicer and the text rendering.

Why the gateway renders and services do not each open a port: a deployment scrapes one address (the gateway's
`/metrics`); on a scrape the gateway asks each service over `omni.common.v1.MetricsService` and merges the answers
into one page, every sample labelled with the `service` that counted it. Each process keeps its numbers in its own
registry (`REGISTRY`, without the default process collectors, so two services never export the same family).

No metric has an instance label: instance names are tenant names, and the page may be scraped without a key.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Any

import grpc
from omni.common.v1 import metrics_pb2, metrics_pb2_grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

# The *_created samples only double the page; nothing here needs them.
disable_created_metrics()  # type: ignore[no-untyped-call]

REGISTRY = CollectorRegistry(auto_describe=True)
"""This process's metrics (each process defines the same objects; only the ones it updates carry samples)."""

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

# Derived by the tracing service from the spans it receives (every process's work, in one place).
MESSAGES = Counter(
    "omni_messages",
    "Messages whose trace reached a terminal status, by channel and status (sent, error, blocked, ignored).",
    ("channel", "status"),
    registry=REGISTRY,
)
WEBHOOK_ACK_SECONDS = Histogram(
    "omni_webhook_ack_seconds",
    "Time ingress took to accept (store and answer) an inbound event.",
    ("channel",),
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
MESSAGE_SECONDS = Histogram(
    "omni_message_duration_seconds",
    "End to end: from the webhook's arrival to the message's terminal status.",
    ("channel",),
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
AGENT_CALL_SECONDS = Histogram(
    "omni_agent_call_seconds",
    "Duration of calls to agents (all attempts of one call).",
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
AGENT_ERRORS = Counter(
    "omni_agent_errors", "Agent calls that failed (error status, timeout, unreachable).", registry=REGISTRY
)
DELIVERY_RETRIES = Counter(
    "omni_delivery_retries",
    "Deliveries of an inbox message to the router that were a retry (attempt 2 or later).",
    registry=REGISTRY,
)
OTLP_FORWARDED = Counter(
    "omni_otlp_forwarded_spans", "Spans forwarded to the operator's OTLP collector.", registry=REGISTRY
)
OTLP_FORWARD_DROPPED = Counter(
    "omni_otlp_forward_dropped_spans",
    "Spans not forwarded to the OTLP collector (queue full or collector unreachable).",
    registry=REGISTRY,
)

# Counted by ingress.
IGNORED_WEBHOOKS = Counter(
    "omni_ignored_webhooks",
    "Webhooks that reached an instance and were ignored; traced=false when over the per-instance trace rate.",
    ("channel", "traced"),
    registry=REGISTRY,
)
INBOX_BACKLOG = Gauge(
    "omni_inbox_backlog", "Accepted messages not handled yet (received or out for delivery).", registry=REGISTRY
)
DEAD_LETTERS = Gauge("omni_dead_letters", "Inbox messages whose delivery gave up (dead letters).", registry=REGISTRY)

# Counted by channels.
OUTBOX_RETRIES = Counter(
    "omni_outbox_retries",
    "Sends of a reply part to a channel that were a retry (the part was tried before and not confirmed sent).",
    ("channel",),
    registry=REGISTRY,
)


def families_to_proto(registry: CollectorRegistry = REGISTRY) -> list[metrics_pb2.MetricFamily]:
    """The registry's current families, samples included, as protos (families without samples are left out)."""
    families: list[metrics_pb2.MetricFamily] = []
    for metric in registry.collect():
        if not metric.samples:
            continue
        families.append(
            metrics_pb2.MetricFamily(
                name=metric.name,
                type=metric.type,
                help=metric.documentation,
                samples=[
                    metrics_pb2.MetricSample(name=s.name, labels=dict(s.labels), value=s.value) for s in metric.samples
                ],
            )
        )
    return families


class MetricsServicer(metrics_pb2_grpc.MetricsServiceServicer):
    """GetMetrics for one process; `refresh` updates the gauges that are read from storage at scrape time."""

    def __init__(
        self, registry: CollectorRegistry = REGISTRY, *, refresh: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        self._registry = registry
        self._refresh = refresh

    async def GetMetrics(
        self, request: metrics_pb2.GetMetricsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> metrics_pb2.GetMetricsResponse:
        if self._refresh is not None:
            await self._refresh()
        return metrics_pb2.GetMetricsResponse(families=families_to_proto(self._registry))


def add_metrics_service(server: grpc.aio.Server, *, refresh: Callable[[], Awaitable[None]] | None = None) -> None:
    """Host MetricsService on a (not yet started) server."""
    metrics_pb2_grpc.add_MetricsServiceServicer_to_server(MetricsServicer(refresh=refresh), server)


class _MergedFamilies(Collector):
    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def render(by_service: Mapping[str, Iterable[metrics_pb2.MetricFamily]]) -> bytes:
    """One Prometheus text page from every service's families: families of the same name are merged and each sample
    gets a `service` label, so the same counter kept by two services stays two series."""
    merged: dict[str, Metric] = {}
    for service, families in by_service.items():
        for family in families:
            metric = merged.get(family.name)
            if metric is None:
                metric = merged[family.name] = Metric(family.name, family.help, family.type)
            for sample in family.samples:
                metric.add_sample(sample.name, {**sample.labels, "service": service}, sample.value)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_MergedFamilies(merged.values()))
    return generate_latest(registry)
