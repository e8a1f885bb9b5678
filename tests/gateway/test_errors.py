"""One handler maps every servicekit error (coming back through a real gRPC status) to HTTP; nothing is HTML."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from servicekit import errors
from tests.gateway.conftest import FakeMesh, whatsapp_instance


@dataclass(frozen=True)
class Mapping:
    """A domain error raised by the fake router and the HTTP answer it must become."""

    id: str
    error: errors.OmniError
    status: int
    reason: str
    detail: str


MAPPINGS = [
    Mapping("not found", errors.NotFoundError("instance x not found"), 404, "NOT_FOUND", "instance x not found"),
    Mapping("already exists", errors.AlreadyExistsError("taken"), 409, "ALREADY_EXISTS", "taken"),
    Mapping("invalid", errors.InvalidArgumentError("bad"), 422, "INVALID_ARGUMENT", "bad"),
    Mapping("not json", errors.InvalidArgumentError("nope", reason="BODY_NOT_JSON"), 400, "BODY_NOT_JSON", "nope"),
    Mapping("precondition", errors.FailedPreconditionError("paused"), 409, "FAILED_PRECONDITION", "paused"),
    Mapping(
        "channel rejected",
        errors.FailedPreconditionError("number not on WhatsApp", reason="CHANNEL_REJECTED"),
        502,
        "CHANNEL_REJECTED",
        "number not on WhatsApp",
    ),
    Mapping(
        "evolution refused",
        errors.FailedPreconditionError("401 from Evolution", reason="EVOLUTION_UNAUTHORIZED"),
        502,
        "EVOLUTION_UNAUTHORIZED",
        "401 from Evolution",
    ),
    Mapping("permission", errors.PermissionDeniedError("no"), 403, "PERMISSION_DENIED", "no"),
    Mapping("unauthenticated", errors.UnauthenticatedError("who"), 401, "UNAUTHENTICATED", "who"),
    Mapping("unavailable", errors.UnavailableError("down"), 503, "UNAVAILABLE", "down"),
    Mapping(
        "channel down",
        errors.UnavailableError("evolution 503", reason="CHANNEL_UNAVAILABLE"),
        502,
        "CHANNEL_UNAVAILABLE",
        "evolution 503",
    ),
    Mapping("deadline", errors.DeadlineExceededError("slow"), 504, "DEADLINE_EXCEEDED", "slow"),
    Mapping("internal", errors.InternalError("db password is hunter2"), 500, "INTERNAL", "internal error"),
]


@pytest.mark.parametrize("case", MAPPINGS, ids=lambda m: m.id)
async def test_error_mapping(client: httpx.AsyncClient, mesh: FakeMesh, case: Mapping) -> None:
    mesh.script.fail("GetInstance", case.error)
    response = await client.get("/api/v1/instances/x")
    assert response.status_code == case.status
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"detail": case.detail, "reason": case.reason}


async def test_invalid_argument_carries_field_errors(client: httpx.AsyncClient, mesh: FakeMesh) -> None:
    mesh.script.fail(
        "CreateInstance",
        errors.InvalidArgumentError(
            "bad instance",
            violations=[errors.FieldViolation("evolution_url", "unreachable"), errors.FieldViolation("name", "x")],
        ),
    )
    response = await client.post("/api/v1/instances", json=whatsapp_instance())
    assert response.status_code == 422
    assert response.json() == {
        "detail": "bad instance",
        "reason": "INVALID_ARGUMENT",
        "errors": [
            {"field": "evolution_url", "description": "unreachable"},
            {"field": "name", "description": "x"},
        ],
    }


async def test_unavailable_sets_retry_after(client: httpx.AsyncClient, mesh: FakeMesh) -> None:
    mesh.script.fail("ListInstances", errors.UnavailableError("busy", retry_after=4.4))
    response = await client.get("/api/v1/instances")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "4"


async def test_a_dead_peer_is_503_not_500(app: Any, mesh: FakeMesh) -> None:
    from gateway.app.mesh import MESH_SERVICES
    from servicekit.grpc_clients import open_channel
    from tests.gateway.conftest import API_KEY, override_stubs

    dead = open_channel("127.0.0.1:1", tracing=False)
    override_stubs(app, dead, dict.fromkeys(MESH_SERVICES, dead))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t", headers={"x-api-key": API_KEY}) as c:
        response = await c.get("/api/v1/instances")
    await dead.close(None)
    assert response.status_code == 503
    assert response.json()["reason"] == "UNAVAILABLE"


async def test_a_gateway_bug_is_a_generic_json_500(app: Any, anon: httpx.AsyncClient) -> None:
    from gateway.app.api import deps

    async def broken() -> Any:
        raise RuntimeError("secret internals")

    app.dependency_overrides[deps.get_tracing_stub] = broken
    response = await anon.get("/api/v1/traces", headers={"x-api-key": "test-admin-key-0123456789"})
    assert response.status_code == 500
    assert response.json() == {"detail": "internal error", "reason": "INTERNAL"}


@dataclass(frozen=True)
class Bad:
    """A malformed request: any 4xx is fine, a 5xx or a non-JSON body is a bug."""

    id: str
    method: str
    path: str
    content: bytes | None = None
    headers: tuple[tuple[str, str], ...] = (("content-type", "application/json"),)
    harmless: bool = False
    """True when the input is odd but answerable (e.g. invalid percent-escapes decode to U+FFFD)."""


def _body(value: Any) -> bytes:
    return json.dumps(value).encode()


MEDIA = "/api/v1/acme/send-media"
BAD_INPUTS = [
    Bad("create not json", "POST", "/api/v1/instances", b"{name: acme"),
    Bad("create empty body", "POST", "/api/v1/instances", b""),
    Bad("create array", "POST", "/api/v1/instances", b"[]"),
    Bad("create null", "POST", "/api/v1/instances", b"null"),
    Bad("create deep nesting", "POST", "/api/v1/instances", b"[" * 5000 + b"]" * 5000),
    Bad("create huge number", "POST", "/api/v1/instances", _body({**whatsapp_instance(), "agent_timeout": 10**400})),
    Bad("create nan", "POST", "/api/v1/instances", b'{"name": "acme", "agent_timeout": NaN}'),
    Bad("create invalid utf-8", "POST", "/api/v1/instances", b'{"name": "\xff\xfe"}'),
    Bad("create form encoded", "POST", "/api/v1/instances", b"name=acme", (("content-type", "text/plain"),)),
    Bad("create surrogate key", "POST", "/api/v1/instances", b'{"\\ud800": 1, "name": "acme"}'),
    Bad("create nul in name", "POST", "/api/v1/instances", _body({**whatsapp_instance(), "name": "a\x00b"})),
    Bad("update not json", "PUT", "/api/v1/instances/acme", b"{"),
    Bad("update wrong types", "PUT", "/api/v1/instances/acme", _body({"is_active": [1], "agent_timeout": {}})),
    Bad("send text empty", "POST", "/api/v1/acme/send-text", _body({"recipient": "", "text": ""})),
    Bad("send text surrogate", "POST", "/api/v1/acme/send-text", b'{"recipient": "1", "text": "\\udfff"}'),
    Bad("send text number", "POST", "/api/v1/acme/send-text", _body({"recipient": 5511, "text": 1})),
    Bad("send media none", "POST", "/api/v1/acme/send-media", _body({"recipient": "1"})),
    Bad(
        "send media both",
        "POST",
        "/api/v1/acme/send-media",
        _body({"recipient": "1", "media_url": "https://a", "media_base64": "AA"}),
    ),
    Bad(
        "send media bad type",
        "POST",
        "/api/v1/acme/send-media",
        _body({"recipient": "1", "media_url": "https://a", "media_type": "gif"}),
    ),
    Bad("send media bad url", "POST", "/api/v1/acme/send-media", _body({"recipient": "1", "media_url": "http://[::1"})),
    Bad("traces bad date", "GET", "/api/v1/traces?start_date=yesterday"),
    Bad("traces bad status", "GET", "/api/v1/traces?status=done"),
    Bad("traces huge page", "GET", "/api/v1/traces?page=99999999999999999999"),
    Bad("traces negative size", "GET", "/api/v1/traces?page_size=-1"),
    Bad("traces phone no digits", "GET", "/api/v1/traces?source_phone=abc"),
    Bad("traces percent garbage", "GET", "/api/v1/traces?instance_name=%ff%fe", harmless=True),
    Bad("dead letters bad page", "GET", "/api/v1/dead-letters?page=abc"),
    Bad("unknown route", "GET", "/api/v1/nothing/here/at/all"),
    Bad("wrong method", "PATCH", "/api/v1/instances"),
    Bad("path garbage", "GET", "/api/v1/instances/%ff%00%ed%a0%80"),
]


@pytest.mark.parametrize("case", BAD_INPUTS, ids=lambda b: b.id)
async def test_no_bad_input_gets_a_500_or_html(client: httpx.AsyncClient, case: Bad) -> None:
    response = await client.request(case.method, case.path, content=case.content, headers=dict(case.headers))
    assert response.headers["content-type"] == "application/json"
    assert "Traceback" not in response.text
    if case.harmless:
        assert response.status_code == 200
        return
    assert 400 <= response.status_code < 500, response.text
    body = response.json()
    assert "detail" in body
    assert "reason" in body
