"""Ignored webhooks are traces with their reason (the design guide's hand-made webhook must show up), at most a
token bucket's worth per instance: over it they are answered and counted but leave no span."""

from __future__ import annotations

import orjson
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from servicekit import metrics
from servicekit import trace_attributes as attrs
from servicekit.channels import Channel
from servicekit.instances import Instance
from services.ingress.core.accept import IGNORED_DISPOSITION, IngressCore
from services.ingress.core.ignored_traces import IgnoredTraceLimiter
from services.ingress.storage import InboxStore
from tests.helpers.instances import DictDirectory

ACME = Instance(name="acme", webhook_auth="none")
OTHER = Instance(name="other", webhook_auth="none")
HAND_MADE = orjson.dumps({"event": "messages.upsert", "instance": "acme", "data": {"hello": "world"}})
"""A webhook typed by hand, as the design guide does: the right event, not Evolution's shape."""
CONTACTS = orjson.dumps({"event": "contacts.update", "instance": "acme", "data": [{"remoteJid": "1@s.whatsapp.net"}]})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def ignored_count(traced: str) -> float:
    return (
        metrics.REGISTRY.get_sample_value("omni_ignored_webhooks_total", {"channel": "whatsapp", "traced": traced})
        or 0.0
    )


def test_token_bucket_per_instance() -> None:
    clock = Clock()
    limiter = IgnoredTraceLimiter(rate=2, burst=3, clock=clock)
    assert [limiter.allow("a") for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("b"), "each instance has its own bucket"
    clock.now += 0.5  # one token back at 2/s
    assert [limiter.allow("a") for _ in range(2)] == [True, False]
    clock.now += 60
    assert [limiter.allow("a") for _ in range(4)] == [True, True, True, False], "never more than the burst"


async def test_a_hand_made_webhook_is_an_ignored_trace_with_its_reason(
    store: InboxStore, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = spans
    core = IngressCore(store, DictDirectory(ACME), tracer=provider.get_tracer("test"))
    before = ignored_count("true")
    result = await core.receive_webhook("acme", Channel.WHATSAPP, HAND_MADE, {})
    assert (result.disposition, result.reason) == (IGNORED_DISPOSITION, "malformed")
    assert len(result.trace_id) == 32
    [span] = [s for s in exporter.get_finished_spans() if s.name == "ingress.accept"]
    assert span.attributes is not None
    assert format(span.context.trace_id, "032x") == result.trace_id
    assert span.attributes[attrs.STATUS] == "ignored"
    assert span.attributes[attrs.ERROR_MESSAGE] == "malformed"
    assert span.attributes[attrs.INSTANCE_NAME] == "acme"
    assert ignored_count("true") == before + 1
    assert await store.count_by_state() == {}, "nothing is stored for an ignored event"


async def test_housekeeping_events_stay_out_of_the_trace_list(
    store: InboxStore, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = spans
    core = IngressCore(store, DictDirectory(ACME), tracer=provider.get_tracer("test"))
    result = await core.receive_webhook("acme", Channel.WHATSAPP, CONTACTS, {})
    assert (result.disposition, result.reason, result.trace_id) == (IGNORED_DISPOSITION, "not_a_message", "")
    [span] = exporter.get_finished_spans()
    assert span.attributes is not None
    assert attrs.STATUS not in span.attributes


async def test_over_the_rate_ignored_webhooks_are_counted_not_traced(
    store: InboxStore, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = spans
    clock = Clock()
    limiter = IgnoredTraceLimiter(rate=10, burst=5, clock=clock)
    core = IngressCore(store, DictDirectory(ACME, OTHER), tracer=provider.get_tracer("test"), ignored_traces=limiter)
    traced_before, untraced_before = ignored_count("true"), ignored_count("false")
    results = [await core.receive_webhook("acme", Channel.WHATSAPP, HAND_MADE, {}) for _ in range(50)]
    assert {r.disposition for r in results} == {IGNORED_DISPOSITION}, "every one is still answered"
    assert sum(1 for r in results if r.trace_id) == 5
    assert len(exporter.get_finished_spans()) == 5, "over the rate nothing reaches the span store"
    assert ignored_count("true") == traced_before + 5
    assert ignored_count("false") == untraced_before + 45
    other = await core.receive_webhook("other", Channel.WHATSAPP, HAND_MADE, {})
    assert other.trace_id, "junk sent to one instance does not silence another's"
    clock.now += 1.0
    assert (await core.receive_webhook("acme", Channel.WHATSAPP, HAND_MADE, {})).trace_id, "the bucket refills"
