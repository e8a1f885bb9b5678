"""The `/__sim/*` control endpoints: the Python API over HTTP, for a simulator run out of process.

They take no auth, are not part of Evolution's API and are left out of `EvolutionState.requests`.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Protocol

from aiohttp import web

from simulators.evolution.rest import json_response, read_body, required
from simulators.evolution.state import EvolutionState, Fault


class ScanQr(Protocol):
    """`InstanceEndpoints.scan_qr`: opens a connecting instance with an account."""

    def __call__(self, name: str, *, owner_jid: str = "", profile_name: str = "") -> None: ...


def _cannot_scan(name: str, *, owner_jid: str = "", profile_name: str = "") -> None:
    raise ValueError("this simulator cannot scan QR codes")


class ReceiptSwitch(Protocol):
    """`ReceiptEmitter`: which receipt statuses follow every send (none: off)."""

    auto_statuses: tuple[str, ...]


class ControlEndpoints:
    """Read the recorded traffic, inject faults and latency, reset, add instances, turn automatic receipts on."""

    def __init__(
        self, state: EvolutionState, scan_qr: ScanQr | None = None, receipts: ReceiptSwitch | None = None
    ) -> None:
        self._state = state
        self._scan_qr = scan_qr or _cannot_scan
        self._receipts = receipts

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/__sim/sent", self._sent),
            web.get("/__sim/presences", self._presences),
            web.get("/__sim/requests", self._requests),
            web.post("/__sim/fail", self._fail),
            web.post("/__sim/latency", self._latency),
            web.post("/__sim/reset", self._reset),
            web.post("/__sim/instances", self._instances),
            web.post("/__sim/scan", self._scan),
            web.post("/__sim/receipts", self._auto_receipts),
        ]

    async def _auto_receipts(self, request: web.Request) -> web.StreamResponse:
        """`{statuses: ["DELIVERY_ACK", "READ"]}` posts those receipts after every send; `[]` stops them."""
        body = await read_body(request)
        statuses = body.get("statuses")
        if self._receipts is None or not isinstance(statuses, list):
            return json_response({"error": "statuses must be a list"}, status=400)
        self._receipts.auto_statuses = tuple(str(s) for s in statuses)
        return json_response({"statuses": list(self._receipts.auto_statuses)})

    async def _sent(self, request: web.Request) -> web.StreamResponse:
        return json_response([asdict(s) for s in self._state.sent])

    async def _presences(self, request: web.Request) -> web.StreamResponse:
        return json_response(self._state.presences)

    async def _requests(self, request: web.Request) -> web.StreamResponse:
        return json_response([list(r) for r in self._state.requests])

    async def _fail(self, request: web.Request) -> web.StreamResponse:
        """`{count, status, body, retry_after, delay, after_send}`, as `EvolutionSimulator.fail_next`."""
        body = await read_body(request)
        count = int(body.get("count", 1))
        fault = Fault(
            status=int(body.get("status", 500)),
            body=body.get("body"),
            retry_after=float(body["retry_after"]) if body.get("retry_after") is not None else None,
            delay=float(body.get("delay", 0.0)),
            after_send=bool(body.get("after_send", False)),
        )
        self._state.queue_faults(count, fault)
        return json_response({"pending_faults": len(self._state.faults)})

    async def _latency(self, request: web.Request) -> web.StreamResponse:
        body = await read_body(request)
        self._state.set_latency(float(body.get("seconds", 0.0)))
        return json_response({"latency": self._state.latency})

    async def _reset(self, request: web.Request) -> web.StreamResponse:
        self._state.reset()
        return json_response({"reset": True})

    async def _instances(self, request: web.Request) -> web.StreamResponse:
        body = await read_body(request)
        required(body, "name")
        name = str(body["name"])
        token = self._state.add_instance(name, body.get("token"), str(body.get("state", "open")))
        return json_response({"name": name, "token": token}, 201)

    async def _scan(self, request: web.Request) -> web.StreamResponse:
        """`{name, owner_jid?, profile_name?}`: the phone scans the instance's QR (`EvolutionSimulator.scan_qr`)."""
        body = await read_body(request)
        required(body, "name")
        name = str(body["name"])
        if name not in self._state.instances:
            return json_response({"error": f"no instance {name!r}"}, 404)
        try:
            self._scan_qr(
                name, owner_jid=str(body.get("owner_jid") or ""), profile_name=str(body.get("profile_name") or "")
            )
        except ValueError as exc:
            return json_response({"error": str(exc)}, 409)
        return json_response({"name": name, "state": self._state.instances[name].state})
