"""GET /metrics: the mesh's Prometheus metrics on one page (text exposition format 0.0.4).

The gateway asks every service that hosts `omni.common.v1.MetricsService` (ingress: ignored webhooks, dead
letters; tracing: everything derived from spans) and merges the answers (`servicekit.metrics.render`). A service
that does not answer is reported by `omni_metrics_source_up{service="..."} 0` instead of failing the scrape.

Open by default, like /health, because Prometheus scrapers rarely send custom headers and the page holds no secret
and no instance name. `AUTOMAGIK_OMNI_METRICS_REQUIRE_KEY=true` makes it need the admin key (x-api-key).
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from omni.common.v1 import metrics_pb2
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.responses import Response

from gateway.app.api.deps import SettingsDep, mesh_of, require_api_key
from gateway.app.api.rpc import call
from servicekit.errors import OmniError
from servicekit.metrics import render

router = APIRouter(tags=["metrics"])

UP_FAMILY = "omni_metrics_source_up"


class MetricsSettings(BaseSettings):
    """Who may scrape (read from the environment at each scrape, so no gateway setting is shared with others)."""

    model_config = SettingsConfigDict(env_prefix="AUTOMAGIK_OMNI_", env_file=".env", extra="ignore", frozen=True)

    metrics_require_key: bool = False
    """True: /metrics needs the admin key; false (default): open, like /health."""


async def _families_of(stub: Any, timeout: float) -> list[metrics_pb2.MetricFamily] | None:
    """A service's families, None when it could not be asked (down, or not hosting MetricsService)."""
    try:
        answer = await call(stub.GetMetrics, metrics_pb2.GetMetricsRequest(), timeout=timeout)
    except OmniError:
        return None
    return list(answer.families)


def _up_family(up: dict[str, bool]) -> metrics_pb2.MetricFamily:
    return metrics_pb2.MetricFamily(
        name=UP_FAMILY,
        type="gauge",
        help="1 when the service answered this scrape's GetMetrics, else 0.",
        samples=[metrics_pb2.MetricSample(name=UP_FAMILY, labels={}, value=float(ok)) for ok in up.values()],
    )


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"}},
)
async def metrics(request: Request, settings: SettingsDep) -> Response:
    """Every service's metrics in the Prometheus text format, each sample labelled with its `service`."""
    if MetricsSettings().metrics_require_key:
        principal = await require_api_key(request, request.headers.get("x-api-key"))
        principal.require_admin()
    stubs: dict[str, Any] = mesh_of(request.app).metrics
    names = list(stubs)
    answers = await asyncio.gather(*(_families_of(stubs[name], settings.api_rpc_timeout_seconds) for name in names))
    by_service: dict[str, list[metrics_pb2.MetricFamily]] = {}
    up: dict[str, bool] = {}
    for name, families in zip(names, answers, strict=True):
        up[name] = families is not None
        by_service[name] = families or []
    for name in up:
        # The service label is added by render(); each service reports its own reachability.
        by_service[name] = [*by_service[name], _up_family({name: up[name]})]
    return Response(render(by_service), media_type=CONTENT_TYPE_LATEST)
