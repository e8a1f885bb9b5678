"""The derivation rules of docs/CONVENTIONS.md "Trace attributes", on the pure aggregate."""

from __future__ import annotations

import itertools

from services.tracing.core import derive
from tests.tracing.builders import MS, T0, message_spans, span

TRACE = "0af7651916cd43dd8448eb211c80319c"


def test_a_trace_without_omni_status_is_not_a_message_trace() -> None:
    aggregate = derive(TRACE, [span(TRACE, "grpc call", 0, 10, instance_name="acme")])
    assert not aggregate.is_message_trace
    assert aggregate.instance_name == "acme"


def test_processing_only() -> None:
    aggregate = derive(TRACE, [span(TRACE, "ingress.accept", 0, 5, status="processing")])
    assert aggregate.status == "processing"
    assert aggregate.error_message == ""


def test_full_message_derives_every_field() -> None:
    aggregate = derive(TRACE, message_spans(TRACE))
    assert aggregate.status == "sent"
    assert (aggregate.instance_name, aggregate.source_channel, aggregate.source_user_id) == ("acme", "whatsapp", "5511")
    assert (aggregate.session_id, aggregate.message_id, aggregate.channel_message_id) == ("sess-1", "m-0af765", "WA1")
    assert aggregate.start_ns == T0
    assert aggregate.end_ns == T0 + 300 * MS
    assert aggregate.agent_duration_ns == 200 * MS
    assert aggregate.new_payloads == {
        "incoming": '{"text": "hi"}',
        "agent_request": '{"message": "hi"}',
        "agent_response": '{"text": "hello"}',
        "outgoing": '{"text": "hello"}',
    }


def test_error_then_later_sent_on_redelivery_ends_sent() -> None:
    first = span(TRACE, "router.route", 10, 100, status="error", error_message="agent timed out")
    retry = span(TRACE, "router.route", 200, 400, status="sent")
    for order in ([first, retry], [retry, first]):
        aggregate = derive(TRACE, order)
        assert aggregate.status == "sent"
        assert aggregate.error_message == ""


def test_the_latest_terminal_span_decides_even_when_it_is_an_error() -> None:
    sent = span(TRACE, "router.route", 10, 100, status="sent")
    dead = span(TRACE, "ingress.dead_letter", 200, 210, status="error", error_message="gave up after 5 attempts")
    aggregate = derive(TRACE, [dead, sent])
    assert (aggregate.status, aggregate.error_message) == ("error", "gave up after 5 attempts")


def test_processing_never_overrides_a_terminal_status() -> None:
    spans = [
        span(TRACE, "router.route", 10, 100, status="blocked", error_message="not allowed"),
        span(TRACE, "late.processing", 500, 600, status="processing"),
    ]
    for order in itertools.permutations(spans):
        aggregate = derive(TRACE, order)
        assert (aggregate.status, aggregate.error_message) == ("blocked", "not allowed")


def test_ignored_with_reason() -> None:
    aggregate = derive(TRACE, [span(TRACE, "ingress.accept", 0, 2, status="ignored", error_message="group muted")])
    assert (aggregate.status, aggregate.error_message) == ("ignored", "group muted")


def test_agent_duration_sums_every_agent_call() -> None:
    spans = [
        span(TRACE, "agent.call", 0, 100, step="agent_call"),
        span(TRACE, "agent.call", 150, 400, step="agent_call"),
        span(TRACE, "channels.send", 400, 500, step="channel_send"),
    ]
    assert derive(TRACE, spans).agent_duration_ns == 350 * MS


def test_identity_fields_take_the_first_non_empty_value() -> None:
    spans = [span(TRACE, "a", 0, 1, session_id=""), span(TRACE, "b", 1, 2, session_id="s-1")]
    assert derive(TRACE, spans).session_id == "s-1"


def test_payload_of_the_span_that_ended_last_wins_in_any_order() -> None:
    early = span(TRACE, "router.route", 0, 100, outgoing='{"n": 1}')
    late = span(TRACE, "router.route", 200, 300, outgoing='{"n": 2}')
    for order in ([early, late], [late, early]):
        assert derive(TRACE, order).new_payloads["outgoing"] == '{"n": 2}'


def test_every_arrival_order_gives_the_same_trace() -> None:
    spans = message_spans(TRACE)
    expected = derive(TRACE, spans)
    for order in itertools.permutations(spans):
        assert derive(TRACE, order) == expected
