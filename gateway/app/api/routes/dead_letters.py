"""Dead letters: GET /api/v1/dead-letters and POST /api/v1/dead-letters/{id}/redeliver, backed by IngressService."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from omni.ingress.v1 import ingress_service_pb2

from gateway.app.api.deps import IngressStubDep, PrincipalDep, SettingsDep, scoped_instance_filter
from gateway.app.api.rpc import call
from gateway.app.mappers.dead_letters import dead_letter_out
from gateway.app.schemas.common import PAGE_MAX
from gateway.app.schemas.dead_letters import DeadLetterList, RedeliverOut

router = APIRouter(prefix="/dead-letters", tags=["dead-letters"])


@router.get("", response_model=DeadLetterList)
async def list_dead_letters(
    stub: IngressStubDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    instance_name: Annotated[str | None, Query(max_length=256)] = None,
    page: Annotated[int, Query(ge=1, le=PAGE_MAX)] = 1,
    page_size: Annotated[int, Query(ge=1, le=500)] = 50,
) -> DeadLetterList:
    """Messages whose delivery gave up, newest first."""
    answer = await call(
        stub.ListDeadLetters,
        ingress_service_pb2.ListDeadLettersRequest(
            instance_name=scoped_instance_filter(principal, instance_name), page=page, page_size=page_size
        ),
        timeout=settings.api_rpc_timeout_seconds,
    )
    return DeadLetterList(
        dead_letters=[dead_letter_out(letter) for letter in answer.dead_letters],
        page=page,
        page_size=page_size,
        total_count=answer.total_count,
    )


@router.post("/{letter_id}/redeliver", response_model=RedeliverOut)
async def redeliver_dead_letter(
    letter_id: str, stub: IngressStubDep, settings: SettingsDep, principal: PrincipalDep
) -> RedeliverOut:
    """Put a dead message back in the inbox with a fresh attempt budget. 404 unknown (or another instance's, for a
    scoped key), 409 not dead."""
    answer = await call(
        stub.RedeliverDeadLetter,
        ingress_service_pb2.RedeliverDeadLetterRequest(
            id=letter_id, instance_name=principal.instance_name if principal.is_scoped else ""
        ),
        timeout=settings.api_rpc_timeout_seconds,
    )
    return RedeliverOut(id=answer.id or letter_id)
