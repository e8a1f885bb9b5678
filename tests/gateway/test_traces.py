"""Trace JSON per the contract, list filters forwarded to TracingService, 404 for unknown traces."""

from __future__ import annotations

import httpx
from omni.tracing.v1 import trace_pb2

from tests.gateway.conftest import FakeMesh
from tests.gateway.fakes import sample_trace

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"


async def test_trace_detail_shape(client: httpx.AsyncClient, mesh: FakeMesh) -> None:
    mesh.tracing.traces[TRACE_ID] = sample_trace(TRACE_ID)
    response = await client.get(f"/api/v1/traces/{TRACE_ID}")
    assert response.status_code == 200
    assert response.json() == {
        "trace_id": TRACE_ID,
        "instance_name": "acme",
        "status": "sent",
        "source_channel": "whatsapp",
        "source_user_id": "5511999999999@s.whatsapp.net",
        "session_id": "sess-1",
        "message_id": "msg-1",
        "channel_message_id": "3EB0ABC",
        "created_at": "2025-10-09T08:53:20Z",
        "updated_at": "2025-10-09T08:53:21Z",
        "duration_ms": 1234,
        "agent_duration_ms": 800,
        "error_message": None,
        "attempts": 0,
        "next_retry_at": None,
        "message_type": None,
        "has_media": False,
        "error_stage": None,
        "steps": {"ingress": None, "agent": 800.0, "send": None, "total": 1234.0},
        "span_tree": [
            {
                "span_id": "b7ad6b7169203331",
                "name": "agent.call",
                "service_name": "omni-router",
                "status": "ok",
                "duration_ms": 800.0,
                "depth": 0,
                "children": [],
            },
            {
                "span_id": "c7ad6b7169203331",
                "name": "channels.send",
                "service_name": None,
                "status": "unset",
                "duration_ms": 50.0,
                "depth": 0,
                "children": [],
            },
        ],
        "incoming_payload": {"event": "messages.upsert", "data": {"key": {"id": "3EB0ABC"}}},
        "agent_request_payload": {"message": "Hello!", "session_id": "sess-1"},
        "agent_response_payload": {"text": "Hi there"},
        "outgoing_payload": None,
        "delivery_status": None,
        "spans": [
            {
                "name": "agent.call",
                "span_id": "b7ad6b7169203331",
                "parent_span_id": "00f067aa0ba902b7",
                "start_time": "2025-10-09T08:53:20.100000Z",
                "end_time": "2025-10-09T08:53:20.900000Z",
                "duration_ms": 800.0,
                "status": "ok",
                "attributes": {"omni.step": "agent_call", "http.status_code": 200.0},
                "service_name": "omni-router",
            },
            {
                "name": "channels.send",
                "span_id": "c7ad6b7169203331",
                "parent_span_id": None,
                "start_time": "2025-10-09T08:53:20.950000Z",
                "end_time": "2025-10-09T08:53:21Z",
                "duration_ms": 50.0,
                "status": "unset",
                "attributes": {},
                "service_name": None,
            },
        ],
    }


async def test_unknown_trace_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/traces/ffffffffffffffffffffffffffffffff")
    assert response.status_code == 404
    assert response.json()["reason"] == "NOT_FOUND"


async def test_list_omits_payloads_and_spans(client: httpx.AsyncClient, mesh: FakeMesh) -> None:
    mesh.tracing.traces[TRACE_ID] = sample_trace(TRACE_ID)
    page = (await client.get("/api/v1/traces")).json()
    assert (page["page"], page["page_size"], page["total_count"]) == (1, 50, 1)
    (trace,) = page["traces"]
    assert trace["trace_id"] == TRACE_ID
    assert trace["status"] == "sent"
    assert "spans" not in trace
    assert "incoming_payload" not in trace


async def test_list_filters_reach_the_tracing_service(client: httpx.AsyncClient, mesh: FakeMesh) -> None:
    params = {
        "instance_name": "acme",
        "status": "error",
        "page": "3",
        "page_size": "20",
        "source_phone": "+55 (11) 99999-9999",
        "session_id": "sess-1",
        "start_date": "2025-10-01T00:00:00Z",
        "end_date": "2025-10-02T12:00:00",
    }
    response = await client.get("/api/v1/traces", params=params)
    assert response.status_code == 200
    request = mesh.script.calls["ListTraces"][0]
    assert request.instance_name == "acme"
    assert request.status == trace_pb2.TRACE_STATUS_ERROR
    assert (request.page, request.page_size) == (3, 20)
    assert request.source_user_id == "5511999999999@s.whatsapp.net"
    assert request.session_id == "sess-1"
    assert request.start_time.ToJsonString() == "2025-10-01T00:00:00Z"
    assert request.end_time.ToJsonString() == "2025-10-02T12:00:00Z"


async def test_explicit_user_id_wins_over_phone(client: httpx.AsyncClient, mesh: FakeMesh) -> None:
    await client.get("/api/v1/traces", params={"source_user_id": "U123", "source_phone": "+1 555"})
    assert mesh.script.calls["ListTraces"][0].source_user_id == "U123"
