"""The operator's trace routes over a fake tracing service: list filters and the default 24 h window, failed
attempts on the trace JSON, the span tree and step durations, payloads by stage, analytics and cleanup."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import httpx
from omni.tracing.v1 import trace_pb2, tracing_service_pb2

from servicekit.errors import InvalidArgumentError
from tests.gateway.conftest import FakeMesh
from tests.gateway.fakes import sample_trace

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"


async def test_new_filters_reach_the_tracing_service(client: httpx.AsyncClient, mesh: FakeMesh) -> None:
    params = {
        "channel": "WhatsApp",
        "sender": "5511@s.whatsapp.net",
        "message_type": "image",
        "has_media": "true",
        "q": "  hello  ",
        "start_date": "2025-10-01T00:00:00Z",
    }
    assert (await client.get("/api/v1/traces", params=params)).status_code == 200
    request = mesh.script.calls["ListTraces"][0]
    assert (request.source_channel, request.source_user_id, request.message_type) == (
        "whatsapp",
        "5511@s.whatsapp.net",
        "image",
    )
    assert request.HasField("has_media")
    assert request.has_media is True
    assert request.text == "hello"
    assert not request.HasField("end_time")


async def test_has_media_unset_means_any(client: httpx.AsyncClient, mesh: FakeMesh) -> None:
    await client.get("/api/v1/traces", params={"has_media": "false"})
    await client.get("/api/v1/traces")
    with_false, without = mesh.script.calls["ListTraces"]
    assert with_false.HasField("has_media")
    assert with_false.has_media is False
    assert not without.HasField("has_media")


async def test_default_window_is_the_last_24_hours(client: httpx.AsyncClient, mesh: FakeMesh) -> None:
    before = time.time()
    await client.get("/api/v1/traces")
    await client.get("/api/v1/traces", params={"all_time": "true"})
    await client.get("/api/v1/traces", params={"end_date": "2025-10-02T00:00:00Z"})
    default, everything, until = mesh.script.calls["ListTraces"]
    start = default.start_time.ToNanoseconds() / 1e9
    assert before - 86_400 - 1 <= start <= time.time() - 86_400 + 1
    assert not default.HasField("end_time")
    assert not everything.HasField("start_time")
    assert not everything.HasField("end_time")
    assert until.start_time.ToJsonString() == "2025-10-01T00:00:00Z"


async def test_bad_filters_are_4xx_with_a_reason(client: httpx.AsyncClient, mesh: FakeMesh) -> None:
    inverted = await client.get(
        "/api/v1/traces", params={"start_date": "2025-10-02T00:00:00Z", "end_date": "2025-10-01T00:00:00Z"}
    )
    assert inverted.status_code == 422
    assert "end" in inverted.json()["detail"]
    assert (await client.get("/api/v1/traces", params={"q": "x" * 201})).status_code == 422
    assert (await client.get("/api/v1/traces", params={"has_media": "maybe"})).status_code == 422
    assert "ListTraces" not in mesh.script.calls


async def test_a_retrying_trace_shows_attempts_and_next_retry(client: httpx.AsyncClient, mesh: FakeMesh) -> None:
    trace = sample_trace(TRACE_ID)
    trace.status = trace_pb2.TRACE_STATUS_PROCESSING
    trace.error_message = "agent unreachable: agent answered HTTP 500"
    trace.attempts = 2
    trace.next_retry_at.FromSeconds(1_760_000_010)
    trace.message_type = "text"
    mesh.tracing.traces[TRACE_ID] = trace
    (listed,) = (await client.get("/api/v1/traces", params={"all_time": "true"})).json()["traces"]
    assert listed["status"] == "processing"
    assert listed["error_message"] == "agent unreachable: agent answered HTTP 500"
    assert (listed["attempts"], listed["next_retry_at"]) == (2, "2025-10-09T08:53:30Z")
    assert listed["message_type"] == "text"


async def test_span_tree_nests_children_and_steps_add_up(client: httpx.AsyncClient, mesh: FakeMesh) -> None:
    trace = sample_trace(TRACE_ID)
    root = trace.spans.add(name="ingress.accept", span_id="00f067aa0ba902b7", status="ok", duration_ms=20.0)
    root.start_time.FromMilliseconds(1_760_000_000_000)
    root.end_time.FromMilliseconds(1_760_000_000_020)
    route = trace.spans.add(name="router.route", span_id="d7ad6b7169203331", parent_span_id="00f067aa0ba902b7")
    route.start_time.FromMilliseconds(1_760_000_000_050)
    route.end_time.FromMilliseconds(1_760_000_001_000)
    route.duration_ms = 950.0
    trace.spans[0].parent_span_id = "d7ad6b7169203331"  # the agent call runs under the route
    trace.spans[1].attributes.update({"omni.step": "channel_send"})
    trace.spans[1].parent_span_id = "d7ad6b7169203331"
    mesh.tracing.traces[TRACE_ID] = trace

    detail = (await client.get(f"/api/v1/traces/{TRACE_ID}")).json()
    assert len(detail["spans"]) == 4  # the flat list stays as it was
    (accept,) = detail["span_tree"]
    assert (accept["name"], accept["depth"]) == ("ingress.accept", 0)
    (routed,) = accept["children"]
    assert (routed["name"], routed["depth"]) == ("router.route", 1)
    assert [(c["name"], c["depth"], c["children"]) for c in routed["children"]] == [
        ("agent.call", 2, []),
        ("channels.send", 2, []),
    ]
    assert detail["steps"] == {"ingress": 50.0, "agent": 800.0, "send": 50.0, "total": 1234.0}


async def test_payloads_by_stage(client: httpx.AsyncClient, mesh: FakeMesh) -> None:
    mesh.tracing.traces[TRACE_ID] = sample_trace(TRACE_ID)
    response = await client.get(f"/api/v1/traces/{TRACE_ID}/payloads")
    assert response.status_code == 200
    assert response.json() == {
        "trace_id": TRACE_ID,
        "incoming": {"event": "messages.upsert", "data": {"key": {"id": "3EB0ABC"}}},
        "agent_request": {"message": "Hello!", "session_id": "sess-1"},
        "agent_response": {"text": "Hi there"},
        "outgoing": None,
    }
    assert (await client.get("/api/v1/traces/" + "f" * 32 + "/payloads")).status_code == 404


async def test_analytics_summary(client: httpx.AsyncClient, mesh: FakeMesh) -> None:
    answer = tracing_service_pb2.GetTraceAnalyticsResponse(total=3, success_rate=0.5)
    answer.duration.p50_ms, answer.duration.p95_ms, answer.duration.avg_ms = 100.0, 300.0, 150.0
    answer.by_status.add(
        key="sent", count=2, error_count=0, avg_duration_ms=120.0, p50_duration_ms=110.0, p95_duration_ms=130.0
    )
    answer.errors_by_stage.add(key="agent", count=1, error_count=1, avg_duration_ms=300.0)
    mesh.script.respond("GetTraceAnalytics", answer)
    response = await client.get(
        "/api/v1/traces/analytics/summary",
        params={"instance_name": "acme", "start": "2025-10-01T00:00:00Z", "end": "2025-10-02T00:00:00Z"},
    )
    assert response.status_code == 200
    body = response.json()
    assert (body["total"], body["success_rate"], body["instance_name"]) == (3, 0.5, "acme")
    assert body["duration"] == {"p50_ms": 100.0, "p95_ms": 300.0, "avg_ms": 150.0}
    assert body["agent_duration"] == {"p50_ms": 0.0, "p95_ms": 0.0, "avg_ms": 0.0}
    assert body["by_status"] == [
        {
            "key": "sent",
            "count": 2,
            "error_count": 0,
            "avg_duration_ms": 120.0,
            "p50_duration_ms": 110.0,
            "p95_duration_ms": 130.0,
        }
    ]
    assert body["errors_by_stage"][0]["key"] == "agent"
    assert (body["start"], body["end"]) == ("2025-10-01T00:00:00Z", "2025-10-02T00:00:00Z")
    request = mesh.script.calls["GetTraceAnalytics"][0]
    assert request.instance_name == "acme"


async def test_analytics_defaults_to_the_last_day_unless_all_time(client: httpx.AsyncClient, mesh: FakeMesh) -> None:
    await client.get("/api/v1/traces/analytics/summary")
    await client.get("/api/v1/traces/analytics/summary", params={"all_time": "true"})
    default, everything = mesh.script.calls["GetTraceAnalytics"]
    day_ago = datetime.now(UTC) - timedelta(days=1)
    assert abs(default.start_time.ToDatetime(tzinfo=UTC) - day_ago) < timedelta(seconds=5)
    assert not everything.HasField("start_time")


async def test_tracing_errors_map_to_4xx(client: httpx.AsyncClient, mesh: FakeMesh) -> None:
    mesh.script.fail("GetTraceAnalytics", InvalidArgumentError("end_time is before start_time"))
    response = await client.get("/api/v1/traces/analytics/summary", params={"all_time": "true"})
    assert response.status_code == 422
    assert response.json()["detail"] == "end_time is before start_time"


async def test_cleanup_dry_run_counts_and_real_run_deletes(client: httpx.AsyncClient, mesh: FakeMesh) -> None:
    old = sample_trace(TRACE_ID)  # created 2025-10-09
    fresh = sample_trace("1" * 32)
    fresh.created_at.FromSeconds(int(time.time()))
    mesh.tracing.traces.update({old.trace_id: old, fresh.trace_id: fresh})

    dry = await client.delete("/api/v1/traces/cleanup", params={"older_than_days": "30"})
    assert dry.status_code == 200
    body = dry.json()
    assert (body["dry_run"], body["would_delete"], "deleted" in body) == (True, 1, False)
    cutoff = datetime.fromisoformat(body["older_than"])
    assert abs(cutoff - (datetime.now(UTC) - timedelta(days=30))) < timedelta(seconds=5)
    assert len(mesh.tracing.traces) == 2

    real = await client.delete("/api/v1/traces/cleanup", params={"older_than_days": "30", "dry_run": "false"})
    assert (real.json()["deleted"], real.json()["dry_run"]) == (1, False)
    assert list(mesh.tracing.traces) == [fresh.trace_id]


async def test_cleanup_needs_a_valid_age(client: httpx.AsyncClient, mesh: FakeMesh) -> None:
    for params in ({}, {"older_than_days": "-1"}, {"older_than_days": "soon"}):
        response = await client.delete("/api/v1/traces/cleanup", params=params)
        assert response.status_code == 422
        assert response.json()["detail"]
    assert "CleanupTraces" not in mesh.script.calls
