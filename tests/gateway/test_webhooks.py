"""The Evolution webhook receiver: raw bytes to ingress, no API key, JSON check, status mapping."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from omni.common.v1 import channel_pb2
from omni.ingress.v1 import ingress_service_pb2

from servicekit.errors import InvalidArgumentError, NotFoundError, PermissionDeniedError, UnavailableError
from tests.gateway.conftest import FakeMesh
from tests.gateway.fakes import GRPC_TIMEOUT_ROUNDING

URL = "/api/v1/webhook/evolution/acme"
JSON = {"content-type": "application/json"}


def _text_message(evolution_fixtures: Path) -> bytes:
    """The shared messages.upsert fixture with odd spacing, a unicode escape, raw UTF-8 and a 1.50 appended:
    any re-serialisation on the way would change those bytes."""
    raw = (evolution_fixtures / "messages-upsert-text.json").read_bytes().rstrip()
    assert raw.endswith(b"}")
    return raw[:-1] + b', "extra": "caf\\u00e9 \xf0\x9f\x98\x80",   "n": 1.50}  \n'


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"not json", id="text"),
        pytest.param(b"<xml/>", id="xml"),
        pytest.param(b'{"event": "messages.upsert"', id="truncated"),
        pytest.param(b"\xff\xfe\x00garbage", id="binary"),
        pytest.param(b"[1, 2]", id="array"),
        pytest.param(b'"just a string"', id="string"),
        pytest.param(b"null", id="null"),
        pytest.param(b"NaN", id="nan"),
    ],
)
async def test_a_body_that_is_not_a_json_object_is_400(anon: httpx.AsyncClient, mesh: FakeMesh, body: bytes) -> None:
    response = await anon.post(URL, content=body, headers=JSON)
    assert response.status_code == 400
    assert response.json()["reason"] == "BODY_NOT_JSON"
    # Ingress decides, after authenticating: the gateway parses nothing a stranger sends.
    assert [call.body for call in mesh.script.calls["ReceiveWebhook"]] == [body]


@pytest.mark.parametrize("body", [b"{}", b"not json"])
async def test_unknown_instance_is_401_like_a_wrong_secret(anon: httpx.AsyncClient, body: bytes) -> None:
    response = await anon.post("/api/v1/webhook/evolution/ghost", content=body, headers=JSON)
    assert response.status_code == 401
    assert response.json()["reason"] == "WEBHOOK_UNAUTHENTICATED"


async def test_accepted_webhook_forwards_the_raw_bytes_intact(
    anon: httpx.AsyncClient, mesh: FakeMesh, evolution_fixtures: Path
) -> None:
    body = _text_message(evolution_fixtures)
    response = await anon.post(URL, content=body, headers={**JSON, "X-Hub-Token": "Abc", "User-Agent": "axios/1.7.9"})
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "accepted", "message_id": "msg-1", "trace_id": "ef" * 16}
    request = mesh.script.calls["ReceiveWebhook"][0]
    assert request.body == body
    assert request.instance_name == "acme"
    assert request.channel == channel_pb2.CHANNEL_WHATSAPP
    assert request.headers["x-hub-token"] == "Abc"
    assert request.headers["user-agent"] == "axios/1.7.9"
    assert all(name == name.lower() for name in request.headers)
    remaining = mesh.script.time_remaining["ReceiveWebhook"]
    assert remaining is not None
    assert 0 < remaining <= 10.0 + GRPC_TIMEOUT_ROUNDING


@pytest.mark.parametrize("suffix", ["messages-upsert", "connection-update", "qrcode-updated"])
async def test_by_events_suffix_goes_to_the_same_instance(anon: httpx.AsyncClient, mesh: FakeMesh, suffix: str) -> None:
    body = b'{"event":"messages.upsert","instance":"acme-support","data":{}}'
    response = await anon.post(f"{URL}/{suffix}", content=body, headers=JSON)
    assert response.status_code == 200
    request = mesh.script.calls["ReceiveWebhook"][0]
    assert (request.instance_name, request.body) == ("acme", body)


@pytest.mark.parametrize(
    "url",
    [
        f"{URL}?secret=s3cr/et",
        # By-events mode appends the suffix to the URL string, after the query.
        f"{URL}?secret=s3cr/et/messages-upsert",
        f"{URL}?secret=s3cr/et/call",
    ],
)
async def test_secret_in_the_query_is_passed_as_a_header(anon: httpx.AsyncClient, mesh: FakeMesh, url: str) -> None:
    response = await anon.post(url, content=b"{}", headers=JSON)
    assert response.status_code == 200
    assert mesh.script.calls["ReceiveWebhook"][0].headers["x-omni-webhook-secret"] == "s3cr/et"


async def test_secret_header_wins_over_the_query(anon: httpx.AsyncClient, mesh: FakeMesh) -> None:
    await anon.post(f"{URL}?secret=q", content=b"{}", headers={**JSON, "X-Omni-Webhook-Secret": "h"})
    assert mesh.script.calls["ReceiveWebhook"][0].headers["x-omni-webhook-secret"] == "h"


@pytest.mark.parametrize(
    ("disposition", "reason", "expected"),
    [
        (ingress_service_pb2.WEBHOOK_DISPOSITION_DUPLICATE, "", {"status": "duplicate", "message_id": "m"}),
        (
            ingress_service_pb2.WEBHOOK_DISPOSITION_IGNORED,
            "fromMe echo",
            {"status": "ignored", "reason": "fromMe echo"},
        ),
    ],
)
async def test_duplicate_and_ignored_are_200(
    anon: httpx.AsyncClient, mesh: FakeMesh, disposition: int, reason: str, expected: dict[str, str]
) -> None:
    mesh.script.respond(
        "ReceiveWebhook",
        ingress_service_pb2.ReceiveWebhookResponse(
            disposition=disposition,  # type: ignore[arg-type]
            message_id=expected.get("message_id", ""),
            reason=reason,
        ),
    )
    response = await anon.post(URL, content=b"{}", headers=JSON)
    assert response.status_code == 200
    body = response.json()
    for key, value in expected.items():
        assert body[key] == value


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (UnavailableError("inbox store down", retry_after=2), 503),
        (PermissionDeniedError("bad webhook secret", reason="WEBHOOK_SECRET_MISMATCH"), 403),
        (NotFoundError("instance acme not found"), 404),
        (InvalidArgumentError("body is not a JSON object", reason="BODY_NOT_JSON"), 400),
    ],
)
async def test_ingress_errors_map_to_statuses_evolution_understands(
    anon: httpx.AsyncClient, mesh: FakeMesh, error: Exception, status: int
) -> None:
    mesh.script.fail("ReceiveWebhook", error)  # type: ignore[arg-type]
    response = await anon.post(URL, content=b"{}", headers=JSON)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    if status == 503:
        assert response.headers["retry-after"] == "2"


async def test_webhook_needs_no_content_type(anon: httpx.AsyncClient, mesh: FakeMesh) -> None:
    response = await anon.post(URL, content=b'{"event":"call"}')
    assert response.status_code == 200
