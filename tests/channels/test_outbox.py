"""The outbox against the Evolution simulator, on SQLite and PostgreSQL: order, idempotency, retries, failures
and reconciliation of sends whose outcome was lost."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from servicekit import trace_attributes as attrs
from servicekit.channels import Channel
from servicekit.database import Database
from servicekit.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError, UnavailableError
from servicekit.instances import DiscordConfig, Instance, WhatsAppConfig
from servicekit.messages import Media
from servicekit.retention import delivery_retention
from servicekit.settings import MeshSettings
from services.channels.core.models import OutboundPart, PartState, SendRequest
from simulators.evolution import EvolutionSimulator
from tests.channels.conftest import CHAT, GLOBAL_KEY, MakeHarness


def text_request(key: str, *texts: str, quoted: str = "", instance: str = "acme") -> SendRequest:
    return SendRequest(
        instance_name=instance,
        chat_id=CHAT,
        idempotency_key=key,
        parts=[OutboundPart(text=t) for t in texts],
        quoted_message_id=quoted,
    )


def sends(requests: list[str]) -> list[str]:
    return [r for r in requests if "/message/" in r]


async def test_parts_are_sent_in_order_and_results_carry_the_key_ids(
    make_harness: MakeHarness, sim: EvolutionSimulator
) -> None:
    core = make_harness().core

    results = await core.send_message(text_request("in-1", "one", "two", "three", quoted="QUOTED1"))

    assert [m.text for m in sim.sent] == ["one", "two", "three"]
    assert [r.state for r in results] == [PartState.SENT] * 3
    assert [r.channel_message_id for r in results] == [m.key_id for m in sim.sent]
    assert [r.index for r in results] == [0, 1, 2]
    assert sim.sent[0].body["quoted"] == {"key": {"id": "QUOTED1"}}
    assert "quoted" not in sim.sent[1].body
    assert all(m.instance == "acme-support" and m.number == CHAT for m in sim.sent)


async def test_a_repeat_with_the_same_key_sends_nothing_and_returns_the_stored_results(
    make_harness: MakeHarness, sim: EvolutionSimulator, requests: list[str]
) -> None:
    core = make_harness().core
    first = await core.send_message(text_request("in-2", "a", "b"))
    count = len(requests)

    again = await core.send_message(text_request("in-2", "a", "b"))

    assert again == first
    assert len(sim.sent) == 2
    assert len(requests) == count


async def test_concurrent_calls_with_one_key_send_each_part_once(
    make_harness: MakeHarness, sim: EvolutionSimulator
) -> None:
    harness = make_harness()
    sim.set_latency(0.05)

    outcomes = await asyncio.gather(*(harness.core.send_message(text_request("in-3", "x", "y")) for _ in range(4)))

    assert len(sim.sent) == 2
    assert all(o == outcomes[0] for o in outcomes)
    assert len(harness.outbox.locks) == 0


async def test_a_single_5xx_is_absorbed_by_the_in_call_retry(
    make_harness: MakeHarness, sim: EvolutionSimulator
) -> None:
    sim.fail_next(1, status=500)

    results = await make_harness().core.send_message(text_request("in-4", "hello"))

    assert results[0].state is PartState.SENT
    assert [m.text for m in sim.sent] == ["hello"]


async def test_persistent_5xx_is_unavailable_and_the_next_call_sends(
    make_harness: MakeHarness, sim: EvolutionSimulator, requests: list[str]
) -> None:
    harness = make_harness(attempts=3)
    sim.fail_next(3, status=500)

    with pytest.raises(UnavailableError) as caught:
        await harness.core.send_message(text_request("in-5", "first", "second"))
    assert caught.value.retry_after == 1.5
    assert len(sends(requests)) == 3
    assert harness.retries == [Channel.WHATSAPP] * 2  # the first send is not a retry
    row = await harness.store.part("in-5", 0)
    assert row.state is PartState.PENDING
    assert "Connection Closed" in row.last_error

    results = await harness.core.send_message(text_request("in-5", "first", "second"))

    assert [r.state for r in results] == [PartState.SENT, PartState.SENT]
    assert [m.text for m in sim.sent] == ["first", "second"]
    assert harness.retries == [Channel.WHATSAPP] * 3  # part 0 again (the caller's retry); part 1 was never tried


async def test_429_honours_retry_after_without_retrying_in_the_call(
    make_harness: MakeHarness, sim: EvolutionSimulator, requests: list[str]
) -> None:
    harness = make_harness()
    sim.fail_next(1, status=429, retry_after=7)

    with pytest.raises(UnavailableError) as caught:
        await harness.core.send_message(text_request("in-6", "hi"))

    assert caught.value.retry_after == 7
    assert len(sends(requests)) == 1
    assert (await harness.store.part("in-6", 0)).state is PartState.PENDING
    assert (await harness.core.send_message(text_request("in-6", "hi")))[0].state is PartState.SENT


async def test_rate_overlimit_400_is_transient_with_a_back_off(
    make_harness: MakeHarness, sim: EvolutionSimulator, evolution_fixtures: Path, requests: list[str]
) -> None:
    body = json.loads((evolution_fixtures / "rest" / "error-400-send-failed.json").read_text())["response"]["body"]
    harness = make_harness()
    sim.fail_next(1, status=400, body=body)

    with pytest.raises(UnavailableError) as caught:
        await harness.core.send_message(text_request("in-7", "hi"))

    assert caught.value.retry_after == 7.5
    assert len(sends(requests)) == 1
    assert (await harness.store.part("in-7", 0)).state is PartState.PENDING


async def test_a_400_fails_the_part_for_good_without_a_retry_storm(
    make_harness: MakeHarness, sim: EvolutionSimulator, evolution_fixtures: Path, requests: list[str]
) -> None:
    fixture = evolution_fixtures / "rest" / "error-400-not-on-whatsapp.json"
    body = json.loads(fixture.read_text())["response"]["body"]
    harness = make_harness()
    sim.fail_next(1, status=400, body=body)

    with pytest.raises(FailedPreconditionError) as caught:
        await harness.core.send_message(text_request("in-8", "first", "second"))

    assert caught.value.reason == "RECIPIENT_NOT_ON_WHATSAPP"
    assert "5511900000000 is not on WhatsApp" in caught.value.message
    assert len(sends(requests)) == 1
    rows = await harness.store.parts("in-8")
    assert [r.state for r in rows] == [PartState.FAILED, PartState.PENDING]

    with pytest.raises(FailedPreconditionError) as again:
        await harness.core.send_message(text_request("in-8", "first", "second"))
    assert again.value.reason == "RECIPIENT_NOT_ON_WHATSAPP"
    assert len(sends(requests)) == 1
    assert sim.sent == []


@pytest.mark.parametrize(("status", "reason"), [(401, "EVOLUTION_UNAUTHORIZED"), (404, "EVOLUTION_INSTANCE_NOT_FOUND")])
async def test_auth_and_unknown_instance_answers_are_permanent(
    make_harness: MakeHarness, sim: EvolutionSimulator, status: int, reason: str
) -> None:
    sim.fail_next(1, status=status)

    with pytest.raises(FailedPreconditionError) as caught:
        await make_harness().core.send_message(text_request(f"in-9-{status}", "hi"))

    assert caught.value.reason == reason


async def test_a_wrong_key_is_refused_by_evolution(
    make_harness: MakeHarness, sim: EvolutionSimulator, instance: Instance
) -> None:
    harness = make_harness()
    harness.directory.instances["acme"] = dataclasses.replace(
        instance, config=dataclasses.replace(instance.config_of(WhatsAppConfig), evolution_key="wrong")
    )

    with pytest.raises(FailedPreconditionError) as caught:
        await harness.core.send_message(text_request("in-10", "hi"))

    assert caught.value.reason == "EVOLUTION_UNAUTHORIZED"
    assert sim.sent == []


async def test_a_send_lost_after_it_left_is_reconciled_and_not_sent_twice(
    make_harness: MakeHarness, sim: EvolutionSimulator, requests: list[str]
) -> None:
    harness = make_harness(timeout=0.3)
    sim.fail_next(1, status=500, delay=2.0, after_send=True)

    with pytest.raises(UnavailableError):
        await harness.core.send_message(text_request("in-11", "did it go?", "second"))
    row = await harness.store.part("in-11", 0)
    assert row.state is PartState.SENDING
    assert len(sim.sent) == 1

    results = await harness.core.send_message(text_request("in-11", "did it go?", "second"))

    assert [m.text for m in sim.sent] == ["did it go?", "second"]
    assert results[0].channel_message_id == sim.sent[0].key_id
    assert [r.state for r in results] == [PartState.SENT, PartState.SENT]
    assert any("/chat/findMessages/" in r for r in requests)


async def test_a_timed_out_send_that_never_left_is_sent_again_after_reconciliation(
    make_harness: MakeHarness, sim: EvolutionSimulator, requests: list[str]
) -> None:
    harness = make_harness(timeout=0.3)
    await harness.core.send_message(text_request("earlier", "same words"))
    sim.fail_next(1, status=500, delay=2.0)

    with pytest.raises(UnavailableError):
        await harness.core.send_message(text_request("in-12", "same words"))
    assert (await harness.store.part("in-12", 0)).state is PartState.SENDING

    results = await harness.core.send_message(text_request("in-12", "same words"))

    # The earlier identical message belongs to another key, so it is not mistaken for this one.
    assert [m.text for m in sim.sent] == ["same words", "same words"]
    assert results[0].channel_message_id == sim.sent[1].key_id
    assert any("/chat/findMessages/" in r for r in requests)


async def test_a_part_claimed_by_another_live_worker_is_not_touched(
    make_harness: MakeHarness, sim: EvolutionSimulator
) -> None:
    first = make_harness(timeout=0.3, worker_id="worker-a")
    sim.fail_next(1, status=500, delay=2.0, after_send=True)
    with pytest.raises(UnavailableError):
        await first.core.send_message(text_request("in-13", "hello"))

    other = make_harness(worker_id="worker-b", lease_seconds=30.0)
    with pytest.raises(UnavailableError) as caught:
        await other.core.send_message(text_request("in-13", "hello"))
    assert caught.value.retry_after is not None
    assert caught.value.retry_after > 20

    expired = make_harness(worker_id="worker-c", lease_seconds=0.0)
    results = await expired.core.send_message(text_request("in-13", "hello"))
    assert results[0].channel_message_id == sim.sent[0].key_id
    assert len(sim.sent) == 1


async def test_media_parts_use_send_media(make_harness: MakeHarness, sim: EvolutionSimulator) -> None:
    request = SendRequest(
        instance_name="acme",
        chat_id=CHAT,
        idempotency_key="in-14",
        parts=[
            OutboundPart(
                text="Seu comprovante",
                media=Media(type="image", mime_type="image/jpeg", url="https://files.example.com/r.jpg"),
            ),
            OutboundPart(
                media=Media(mime_type="application/pdf", base64="data:application/pdf;base64,JVBERi0xLjQgdGVzdA==")
            ),
        ],
    )

    results = await make_harness().core.send_message(request)

    assert [r.state for r in results] == [PartState.SENT, PartState.SENT]
    image, document = (m.body for m in sim.sent)
    assert image["mediatype"] == "image"
    assert image["media"] == "https://files.example.com/r.jpg"
    assert image["caption"] == "Seu comprovante"
    assert document["mediatype"] == "document"
    assert document["media"] == "JVBERi0xLjQgdGVzdA=="
    assert document["fileName"]


async def test_pacing_between_parts(make_harness: MakeHarness, sim: EvolutionSimulator) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()

    await make_harness(part_delay_seconds=0.15).core.send_message(text_request("in-15", "a", "b", "c"))

    assert loop.time() - started >= 0.3
    assert len(sim.sent) == 3


async def test_the_send_span_carries_the_trace_attributes(
    make_harness: MakeHarness, sim: EvolutionSimulator, spans: InMemorySpanExporter
) -> None:
    await make_harness().core.send_message(text_request("in-16", "a", "b"))

    (span,) = [s for s in spans.get_finished_spans() if s.name == "channels.send"]
    assert span.attributes is not None
    assert span.attributes[attrs.STEP] == attrs.STEP_CHANNEL_SEND
    assert span.attributes[attrs.INSTANCE_NAME] == "acme"
    assert span.attributes["omni.chat_id"] == CHAT
    assert span.attributes["omni.part_count"] == 2
    assert list(span.attributes["omni.channel_message_ids"]) == [m.key_id for m in sim.sent]  # type: ignore[arg-type]


async def test_unknown_unsupported_and_invalid_requests(make_harness: MakeHarness, sim: EvolutionSimulator) -> None:
    harness = make_harness()
    harness.directory.instances["disc"] = Instance(name="disc", config=DiscordConfig(bot_token="t"))

    with pytest.raises(NotFoundError):
        await harness.core.send_message(text_request("k1", "hi", instance="nope"))
    with pytest.raises(FailedPreconditionError) as caught:
        await harness.core.send_message(text_request("k2", "hi", instance="disc"))
    assert caught.value.reason == "CHANNEL_NOT_SUPPORTED"
    with pytest.raises(InvalidArgumentError) as invalid:
        await harness.core.send_message(text_request("k3"))
    assert [v.field for v in invalid.value.violations] == ["parts"]
    with pytest.raises(InvalidArgumentError):
        await harness.core.send_message(text_request("", "hi"))
    assert sim.sent == []


async def test_a_proxy_gateway_timeout_is_an_unknown_outcome(
    make_harness: MakeHarness, sim: EvolutionSimulator, requests: list[str]
) -> None:
    harness = make_harness()
    sim.fail_next(1, status=504, body="<html>504 Gateway Time-out</html>", after_send=True)

    with pytest.raises(UnavailableError):
        await harness.core.send_message(text_request("in-17", "behind nginx"))
    assert (await harness.store.part("in-17", 0)).state is PartState.SENDING
    assert len(sends(requests)) == 1

    results = await harness.core.send_message(text_request("in-17", "behind nginx"))

    assert len(sim.sent) == 1
    assert results[0].channel_message_id == sim.sent[0].key_id


async def test_an_instance_without_its_own_key_uses_evolution_api_key(
    make_harness: MakeHarness, sim: EvolutionSimulator, instance: Instance
) -> None:
    harness = make_harness(fallback_key=GLOBAL_KEY)
    harness.directory.instances["keyless"] = Instance(
        name="keyless",
        config=WhatsAppConfig(
            evolution_url=sim.url, whatsapp_instance=instance.config_of(WhatsAppConfig).whatsapp_instance
        ),
    )
    with pytest.raises(FailedPreconditionError):
        await make_harness().core.send_message(text_request("keyless-0", "no key", instance="keyless"))
    results = await harness.core.send_message(text_request("keyless-1", "global key", instance="keyless"))
    assert [r.state for r in results] == [PartState.SENT]
    assert sim.sent[-1].text == "global key"


async def test_retention_deletes_old_finished_replies_and_keeps_replies_in_progress(
    make_harness: MakeHarness, sim: EvolutionSimulator, db: Database, evolution_fixtures: Path
) -> None:
    harness = make_harness()
    await harness.core.send_message(text_request("old-sent", "a", "b"))
    await harness.core.send_message(text_request("recent-sent", "c"))
    body = json.loads((evolution_fixtures / "rest" / "error-400-not-on-whatsapp.json").read_text())["response"]["body"]
    sim.fail_next(1, status=400, body=body)
    with pytest.raises(FailedPreconditionError):
        await harness.core.send_message(text_request("old-refused", "d", "e"))  # part 1 stays pending for ever
    # A reply in flight: part 0 claimed (`sending`), part 1 pending.
    await harness.store.insert_parts("old-in-flight", "acme", CHAT, [OutboundPart(text="f"), OutboundPart(text="g")],
                                     0.0, owner="worker-b")  # fmt: skip
    await db.execute("UPDATE outbox_parts SET created_at = 0 WHERE idempotency_key <> 'recent-sent'")

    sweep = delivery_retention("outbox parts", harness.store.purge_finished, MeshSettings(delivery_retention_days=30))
    assert await sweep.run_once() == 4
    assert [r.state for r in await harness.store.parts("old-in-flight")] == [PartState.SENDING, PartState.PENDING]
    assert [r.state for r in await harness.store.parts("recent-sent")] == [PartState.SENT]
    assert await harness.store.parts("old-sent") == []
    assert await harness.store.parts("old-refused") == []
