"""/metrics end to end: after one WhatsApp message the gateway's page (parsed with the Prometheus text parser)
counts it as sent with its latencies in histogram buckets; an ignored hand-made webhook is an `ignored` trace with
its reason, and is counted."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from simulators.evolution import text_upsert
from tests.e2e.conftest import World
from tests.helpers.mesh import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

JOAO = "5511988887777@s.whatsapp.net"


async def scrape(world: World) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    async with aiohttp.ClientSession() as session, session.get(f"{world.mesh.base_url}/metrics") as response:
        assert response.status == 200, "open without a key by default"
        text = await response.text()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= ls)


async def post(world: World, instance: str, envelope: dict[str, Any]) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.post(world.mesh.webhook_url(instance), json=envelope) as r:
        assert r.status == 200
        body: dict[str, Any] = await r.json()
        return body


async def test_a_sent_message_is_counted_with_latency_histograms(world: World) -> None:
    instance = await world.new_instance()
    body = await post(world, instance, text_upsert(instance, JOAO, "quanto custa?"))
    assert body["status"] == "accepted"

    async def counted() -> dict[tuple[str, frozenset[tuple[str, str]]], float] | None:
        samples = await scrape(world)
        sent = value(samples, "omni_messages_total", channel="whatsapp", status="sent", service="tracing")
        agent = value(samples, "omni_agent_call_seconds_count")
        # Each service exports its spans on its own schedule: ingress's accept span may land after the router's.
        ack = value(samples, "omni_webhook_ack_seconds_count")
        return samples if sent >= 1 and agent >= 1 and ack >= 1 else None

    samples = await eventually(counted, timeout=20)
    for histogram in ("omni_webhook_ack_seconds", "omni_message_duration_seconds", "omni_agent_call_seconds"):
        buckets = [ls for (n, ls), _ in samples.items() if n == f"{histogram}_bucket"]
        assert any(("le", "+Inf") in ls for ls in buckets), histogram
        assert value(samples, f"{histogram}_count") >= 1, histogram
    assert value(samples, "omni_metrics_source_up", service="ingress") == 1
    assert value(samples, "omni_metrics_source_up", service="tracing") == 1
    assert value(samples, "omni_metrics_source_up", service="channels") == 1
    assert ("omni_dead_letters", frozenset({("service", "ingress")})) in samples
    assert ("omni_inbox_backlog", frozenset({("service", "ingress")})) in samples
    assert not any(instance in str(labels) for _, labels in samples), "no tenant name on the page"


async def test_a_hand_made_webhook_shows_as_an_ignored_trace(world: World) -> None:
    instance = await world.new_instance()
    body = await post(world, instance, {"event": "messages.upsert", "instance": instance, "data": {"hi": 1}})
    assert (body["status"], body["reason"]) == ("ignored", "malformed")

    async def listed() -> dict[str, Any] | None:
        code, listing = await world.mesh.get_json("/api/v1/traces", instance_name=instance, status="ignored")
        return listing["traces"][0] if code == 200 and listing["traces"] else None

    trace = await eventually(listed, timeout=15)
    assert trace["error_message"] == "malformed"
    assert trace["source_channel"] == "whatsapp"
    samples = await scrape(world)
    assert value(samples, "omni_ignored_webhooks_total", channel="whatsapp", traced="true") >= 1
    await asyncio.sleep(0)


async def test_a_send_evolution_refused_once_is_counted_as_an_outbox_retry(world: World) -> None:
    before = value(await scrape(world), "omni_outbox_retries_total", channel="whatsapp", service="channels")
    instance = await world.new_instance()
    world.evolution.fail_next(1, status=500)
    body = await post(world, instance, text_upsert(instance, JOAO, "e a entrega?"))
    assert body["status"] == "accepted"

    async def sent() -> bool | None:
        return True if any(m.instance == instance for m in world.evolution.sent) else None

    await eventually(sent, timeout=20)
    after = value(await scrape(world), "omni_outbox_retries_total", channel="whatsapp", service="channels")
    assert after == before + 1
