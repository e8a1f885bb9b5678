"""Dead letters through IngressService: listing and redelivery."""

from __future__ import annotations

import httpx
from omni.ingress.v1 import ingress_service_pb2

from servicekit.errors import FailedPreconditionError
from tests.gateway.conftest import FakeMesh
from tests.gateway.fakes import dead_letter


async def test_list_dead_letters(client: httpx.AsyncClient, mesh: FakeMesh) -> None:
    mesh.script.respond(
        "ListDeadLetters", ingress_service_pb2.ListDeadLettersResponse(dead_letters=[dead_letter()], total_count=1)
    )
    response = await client.get("/api/v1/dead-letters", params={"instance_name": "acme", "page_size": 10})
    assert response.status_code == 200
    page = response.json()
    assert (page["page"], page["page_size"], page["total_count"]) == (1, 10, 1)
    (letter,) = page["dead_letters"]
    assert letter["id"] == "dead-1"
    assert letter["instance_name"] == "acme"
    assert letter["channel"] == "whatsapp"
    assert letter["attempts"] == 8
    assert letter["last_error"] == "agent unavailable"
    assert letter["dead_at"] == "2025-10-09T09:01:40Z"
    assert letter["message"]["text"] == "hello"
    request = mesh.script.calls["ListDeadLetters"][0]
    assert (request.instance_name, request.page, request.page_size) == ("acme", 1, 10)


async def test_redeliver(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/dead-letters/dead-1/redeliver")
    assert response.status_code == 200
    assert response.json() == {"id": "dead-1", "status": "redelivering"}


async def test_redeliver_unknown_is_404(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/dead-letters/nope/redeliver")
    assert response.status_code == 404


async def test_redeliver_not_dead_is_409(client: httpx.AsyncClient, mesh: FakeMesh) -> None:
    mesh.script.fail("RedeliverDeadLetter", FailedPreconditionError("message is not dead"))
    response = await client.post("/api/v1/dead-letters/dead-1/redeliver")
    assert response.status_code == 409
