"""Who may call what: every /api/v1 route of the OpenAPI spec (so a new route is covered without editing this file)
against no key, wrong keys, the admin key, a key scoped to the route's instance and a key scoped to another one.

Each route is classified here on purpose, not derived from the code under test: an *admin* route answers 403 to
any scoped key; an *instance* route names its instance in the path and answers 404 to another instance's key; a
*resource* route names no instance but serves items that belong to one (a trace, a dead letter) and hides the
others'. A route that fits none of these fails `test_every_route_is_classified` until someone decides.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from gateway.app.main import create_app
from tests.gateway.conftest import API_KEY, FakeMesh, gateway_settings, whatsapp_instance
from tests.gateway.fakes import dead_letter, fake_user, sample_trace

OWN = "acme"
OTHER = "globex"
INSTANCE_PARAMS = frozenset({"name", "instance", "instance_name"})

ADMIN_ROUTES = frozenset(
    {
        ("POST", "/api/v1/instances"),
        ("GET", "/api/v1/instances"),
        ("PUT", "/api/v1/instances/{name}"),
        ("PATCH", "/api/v1/instances/{name}"),
        ("DELETE", "/api/v1/instances/{name}"),
        ("GET", "/api/v1/instances/discover"),
        ("POST", "/api/v1/instances/{name}/webhook-secret/rotate"),
        ("POST", "/api/v1/instances/{name}/agent-signing-secret/rotate"),
        ("DELETE", "/api/v1/traces/cleanup"),
    }
)
"""Operator-only routes; with every key-management route (`/instances/{name}/keys...`)."""

RESOURCE_ROUTES = frozenset(
    {
        ("GET", "/api/v1/traces"),
        ("GET", "/api/v1/traces/{trace_id}"),
        ("GET", "/api/v1/traces/{trace_id}/payloads"),
        ("GET", "/api/v1/traces/analytics/summary"),
        ("GET", "/api/v1/dead-letters"),
        ("POST", "/api/v1/dead-letters/{letter_id}/redeliver"),
        ("GET", "/api/v1/access/rules"),
        ("POST", "/api/v1/access/rules"),
        ("DELETE", "/api/v1/access/rules/{rule_id}"),
        ("POST", "/api/v1/access/check"),
        ("GET", "/api/v1/users"),
        ("GET", "/api/v1/users/{user_id}"),
        ("POST", "/api/v1/users/{user_id}/link"),
        ("DELETE", "/api/v1/users/{user_id}"),
        ("GET", "/api/v1/sessions"),
        ("GET", "/api/v1/sessions/{session_id}"),
        ("POST", "/api/v1/sessions/{session_id}/reset"),
    }
)

TRACE_OF = {OWN: "0af7651916cd43dd8448eb211c80319c", OTHER: "1bf7651916cd43dd8448eb211c80319d"}
LETTER_OF = {OWN: "dead-1", OTHER: "dead-2"}
RULE_OF = {OWN: "rule-own", OTHER: "rule-other"}
USER_OF = {OWN: "user-own", OTHER: "user-other"}
USER_RPCS = frozenset({"GetUser", "LinkUsers", "DeleteUser", "GetSession", "ResetSession"})
SECOND_OWN_USER = "user-own-2"

BODIES: dict[tuple[str, str], Any] = {
    ("POST", "/api/v1/instances"): whatsapp_instance("newone"),
    ("PUT", "/api/v1/instances/{name}"): {"is_active": False},
    ("POST", "/api/v1/{instance}/send-text"): {"recipient": "+5511999999999", "text": "hi"},
    ("POST", "/api/v1/{instance}/send-media"): {"recipient": "+5511999999999", "media_url": "https://x.test/a.png"},
    # Bodies that name the instance: a callable gets the instance the request is made for.
    ("POST", "/api/v1/access/rules"): lambda instance: {
        "phone_number": "+5511*",
        "rule_type": "block",
        "instance_name": instance,
    },
    ("POST", "/api/v1/users/{user_id}/link"): {"user_id": SECOND_OWN_USER},
    ("POST", "/api/v1/access/check"): lambda instance: {"instance_name": instance, "phone_number": "+5511999999999"},
}


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    has_body: bool

    @property
    def params(self) -> list[str]:
        return re.findall(r"{(\w+)}", self.path)

    @property
    def kind(self) -> str:
        """admin, instance, resource, or unclassified."""
        if (self.method, self.path) in ADMIN_ROUTES or self.path.startswith("/api/v1/instances/{name}/keys"):
            return "admin"
        if (self.method, self.path) in RESOURCE_ROUTES:
            return "resource"
        if INSTANCE_PARAMS & set(self.params):
            return "instance"
        return "unclassified"

    def url(self, instance: str) -> str:
        """The path filled for `instance`; a list with no instance in its path filters on it."""
        values = {"trace_id": TRACE_OF.get(instance, "f" * 32), "letter_id": LETTER_OF.get(instance, "dead-0")}
        values["key_id"] = "key-1"
        values["rule_id"] = RULE_OF.get(instance, "rule-0")
        values["user_id"] = USER_OF.get(instance, "user-0")
        values["session_id"] = f"session-{values['user_id']}"
        filled = re.sub(
            r"{(\w+)}", lambda m: instance if m[1] in INSTANCE_PARAMS else values.get(m[1], "item-1"), self.path
        )
        if self.kind == "resource" and not self.params:
            filled += f"?instance_name={instance}"
        return filled

    def body(self, instance: str = OWN) -> Any:
        body = BODIES.get((self.method, self.path), {} if self.has_body else None)
        return body(instance) if callable(body) else body

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


def _routes() -> list[Route]:
    spec = create_app(gateway_settings()).openapi()
    return [
        Route(method.upper(), path, "requestBody" in operation)
        for path, operations in spec["paths"].items()
        if path.startswith("/api/v1/") and not path.startswith("/api/v1/webhook/")
        for method, operation in operations.items()
    ]


ROUTES = _routes()
ADMIN = [r for r in ROUTES if r.kind == "admin"]
REACHABLE = [r for r in ROUTES if r.kind in ("instance", "resource")]


@dataclass
class Tenants:
    mesh: FakeMesh
    own_key: str
    other_key: str


@pytest.fixture
async def tenants(mesh: FakeMesh, client: httpx.AsyncClient) -> Tenants:
    """Two instances, each with a trace, a dead letter and a scoped key."""
    for name in (OWN, OTHER):
        assert (await client.post("/api/v1/instances", json=whatsapp_instance(name))).status_code == 201
        trace = sample_trace(TRACE_OF[name])
        trace.instance_name = name
        mesh.tracing.traces[trace.trace_id] = trace
        letter = dead_letter()
        letter.id = letter.message.id = LETTER_OF[name]
        letter.message.instance_name = name
        mesh.ingress.letters.append(letter)
        mesh.ingress.dead.add(letter.id)
        mesh.access.add_rule(name, "+5511*", RULE_OF[name])
        mesh.users.users[USER_OF[name]] = fake_user(USER_OF[name], name)
    mesh.users.users[SECOND_OWN_USER] = fake_user(SECOND_OWN_USER, OWN)
    return Tenants(mesh, mesh.router.add_api_key(OWN), mesh.router.add_api_key(OTHER))


@pytest.fixture
async def http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client without default headers: each request says which key it presents."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://hub.test") as client:
        yield client


async def _call(http: httpx.AsyncClient, route: Route, instance: str, key: str | None) -> httpx.Response:
    headers = {} if key is None else {"x-api-key": key}
    return await http.request(route.method, route.url(instance), json=route.body(instance), headers=headers)


def _calls(mesh: FakeMesh) -> dict[str, int]:
    return {method: len(requests) for method, requests in mesh.script.calls.items()}


def _new_calls(mesh: FakeMesh, before: dict[str, int]) -> set[str]:
    return {method for method, count in _calls(mesh).items() if count > before.get(method, 0)}


def test_every_route_is_classified() -> None:
    unclassified = [str(r) for r in ROUTES if r.kind == "unclassified"]
    assert not unclassified, f"decide who may call these (ADMIN_ROUTES or RESOURCE_ROUTES): {unclassified}"
    assert len(ADMIN) >= 8
    assert len(REACHABLE) >= 8


@pytest.mark.parametrize("route", ROUTES, ids=str)
async def test_no_key_is_401_json(http: httpx.AsyncClient, tenants: Tenants, route: Route) -> None:
    before = _calls(tenants.mesh)
    response = await _call(http, route, OWN, None)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/json"
    assert response.json()["reason"] == "API_KEY_MISSING"
    assert not _new_calls(tenants.mesh, before)


@pytest.mark.parametrize("route", ROUTES, ids=str)
@pytest.mark.parametrize("key", ["wrong-key", "omni_sk_" + "z" * 43, API_KEY + "x", "omni_sk_" + "a" * 300])
async def test_wrong_key_is_401(http: httpx.AsyncClient, tenants: Tenants, route: Route, key: str) -> None:
    before = _calls(tenants.mesh)
    response = await _call(http, route, OWN, key)
    assert response.status_code == 401
    assert response.json()["reason"] == "API_KEY_INVALID"
    assert _new_calls(tenants.mesh, before) <= {"AuthenticateApiKey"}


@pytest.mark.parametrize("route", ADMIN, ids=str)
@pytest.mark.parametrize("instance", [OWN, OTHER, "ghost"])
async def test_scoped_key_on_an_admin_route_is_403_before_any_lookup(
    http: httpx.AsyncClient, tenants: Tenants, route: Route, instance: str
) -> None:
    """Whatever instance the path names (its own, another, none at all), so nothing can be probed."""
    before = _calls(tenants.mesh)
    response = await _call(http, route, instance, tenants.own_key)
    assert response.status_code == 403
    assert response.json()["reason"] == "ADMIN_ONLY"
    assert _new_calls(tenants.mesh, before) <= {"AuthenticateApiKey"}


@pytest.mark.parametrize("route", ROUTES, ids=str)
async def test_admin_key_reaches_every_route(http: httpx.AsyncClient, tenants: Tenants, route: Route) -> None:
    response = await _call(http, route, OTHER, API_KEY)
    assert response.status_code not in (401, 403)


@pytest.mark.parametrize("route", REACHABLE, ids=str)
async def test_scoped_key_on_another_instances_route_is_404(
    http: httpx.AsyncClient, tenants: Tenants, route: Route
) -> None:
    """Exactly the router's answer for a missing instance, and nothing done or asked of that instance."""
    before = _calls(tenants.mesh)
    response = await _call(http, route, OTHER, tenants.own_key)
    assert response.status_code == 404
    if route.kind == "instance" or not route.params:
        assert response.json() == {"detail": f"instance '{OTHER}' not found", "reason": "INSTANCE_NOT_FOUND"}
    made = _new_calls(tenants.mesh, before) - {"AuthenticateApiKey"}
    if route.kind == "instance":
        assert not made
    else:
        assert made <= {"GetTrace", "ListDeadLetters", "RedeliverDeadLetter", "DeleteRule", *USER_RPCS}
        # The users service is asked only within the key's own instance (it answers 404 for another's user).
        for method in USER_RPCS:
            sent = tenants.mesh.script.calls.get(method, [])[before.get(method, 0) :]
            assert all(request.instance_name == OWN for request in sent)
        # Whatever reaches ingress (or the router's AccessService) is limited to the key's own instance (they answer
        # 404 for another's letter or rule).
        for method in ("ListDeadLetters", "RedeliverDeadLetter", "DeleteRule"):
            sent = tenants.mesh.script.calls.get(method, [])[before.get(method, 0) :]
            assert all(request.instance_name == OWN for request in sent)


@pytest.mark.parametrize("route", REACHABLE, ids=str)
async def test_scoped_key_on_its_own_instance_acts_as_the_admin(
    http: httpx.AsyncClient, tenants: Tenants, route: Route
) -> None:
    scoped = await _call(http, route, OWN, tenants.own_key)
    admin = await _call(http, route, OWN, API_KEY)
    assert scoped.status_code not in (401, 403)
    assert not scoped.content or scoped.json().get("reason") != "INSTANCE_NOT_FOUND"
    assert scoped.status_code == admin.status_code, scoped.text


@pytest.mark.parametrize("path", ["/api/v1/traces", "/api/v1/dead-letters"])
async def test_lists_are_filtered_to_a_scoped_keys_instance(
    http: httpx.AsyncClient, tenants: Tenants, path: str
) -> None:
    method = "ListTraces" if "traces" in path else "ListDeadLetters"
    response = await http.get(path, headers={"x-api-key": tenants.own_key})
    assert response.status_code == 200
    assert tenants.mesh.script.calls[method][-1].instance_name == OWN
    await http.get(path, headers={"x-api-key": API_KEY})
    assert tenants.mesh.script.calls[method][-1].instance_name == ""
    if method == "ListDeadLetters":
        assert [letter["id"] for letter in response.json()["dead_letters"]] == [LETTER_OF[OWN]]


async def test_a_scoped_key_may_redeliver_its_own_dead_letter_only(http: httpx.AsyncClient, tenants: Tenants) -> None:
    own = await http.post(f"/api/v1/dead-letters/{LETTER_OF[OWN]}/redeliver", headers={"x-api-key": tenants.own_key})
    assert own.status_code == 200
    other_url = f"/api/v1/dead-letters/{LETTER_OF[OTHER]}/redeliver"
    assert (await http.post(other_url, headers={"x-api-key": tenants.own_key})).status_code == 404
    # Both asks name the key's own instance, so ingress itself refuses the other instance's letter.
    assert [(r.id, r.instance_name) for r in tenants.mesh.script.calls["RedeliverDeadLetter"]] == [
        (LETTER_OF[OWN], OWN),
        (LETTER_OF[OTHER], OWN),
    ]
