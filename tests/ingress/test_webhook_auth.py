"""Webhook authentication: only a request that proves the instance's secret is stored, and a stranger cannot tell
an unknown instance from a wrong secret."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import orjson
import pytest

from servicekit import errors
from servicekit.instances import DiscordConfig, Instance
from services.ingress.core.accept import ACCEPTED, IngressCore
from services.ingress.storage import InboxStore
from tests.helpers.instances import DictDirectory
from tests.ingress.support import body, upsert

SECRET = "current-secret-0123456789abcdef"
OLD = "previous-secret-0123456789abcdef"
OTHER = "other-instance-secret-0123456789"
NOW = time.time()

LOCKED = Instance(name="locked", id="id-locked", webhook_secret=SECRET)
ROTATED = Instance(
    name="rotated",
    id="id-rotated",
    webhook_secret=SECRET,
    previous_webhook_secret=OLD,
    previous_webhook_secret_expires_at=NOW + 3600,
)
EXPIRED = Instance(
    name="expired",
    id="id-expired",
    webhook_secret=SECRET,
    previous_webhook_secret=OLD,
    previous_webhook_secret_expires_at=NOW - 1,
)
NEIGHBOUR = Instance(name="neighbour", id="id-neighbour", webhook_secret=OTHER)
OPEN = Instance(name="open", id="id-open", webhook_auth="none")
NO_SECRET = Instance(name="nosecret", id="id-nosecret")
DISCO = Instance(name="disco", id="id-disco", config=DiscordConfig(bot_token="token"), webhook_secret=SECRET)


def jwt(secret: str, *, exp: float, alg: str = "HS256", iat: float | None = None) -> str:
    """An HS256 JWT as Evolution's `jwt_key` option makes it ({iat, exp, app, action})."""

    def part(value: object) -> str:
        return base64.urlsafe_b64encode(orjson.dumps(value)).rstrip(b"=").decode()

    head = part({"alg": alg, "typ": "JWT"})
    claims = part({"iat": int(iat if iat is not None else exp - 600), "exp": int(exp), "app": "evolution"})
    signature = hmac.new(secret.encode(), f"{head}.{claims}".encode(), hashlib.sha256).digest()
    return f"{head}.{claims}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


def core(store: InboxStore) -> IngressCore:
    return IngressCore(store, DictDirectory(LOCKED, ROTATED, EXPIRED, NEIGHBOUR, OPEN, NO_SECRET, DISCO))


@pytest.mark.parametrize(
    ("instance", "headers"),
    [
        ("locked", {"x-omni-webhook-secret": SECRET}),
        ("locked", {"X-Omni-Webhook-Secret": SECRET}),
        # Valid for two hours from collection (not Evolution's 10 minutes): a long suite reaches this test late.
        ("locked", {"authorization": f"Bearer {jwt(SECRET, exp=NOW + 7200, iat=NOW)}"}),
        ("rotated", {"x-omni-webhook-secret": OLD}),
        ("rotated", {"x-omni-webhook-secret": SECRET}),
        ("open", {}),
    ],
    ids=["header", "header-any-case", "jwt", "previous-in-grace", "current-after-rotation", "webhook-auth-none"],
)
async def test_authentic_webhooks_are_stored(store: InboxStore, instance: str, headers: dict[str, str]) -> None:
    result = await core(store).receive_webhook(instance, "whatsapp", body(upsert("OK")), headers)
    assert result.disposition == ACCEPTED


@pytest.mark.parametrize(
    ("instance", "headers"),
    [
        ("locked", {}),
        ("locked", {"x-omni-webhook-secret": "wrong"}),
        ("locked", {"x-omni-webhook-secret": OTHER}),
        ("locked", {"x-omni-webhook-secret": SECRET[:-1]}),
        ("locked", {"authorization": f"Basic {SECRET}"}),
        ("locked", {"authorization": f"Bearer {SECRET}"}),
        ("locked", {"authorization": f"Bearer {jwt(SECRET, exp=NOW - 120)}"}),
        ("locked", {"authorization": f"Bearer {jwt(OTHER, exp=NOW + 600)}"}),
        ("locked", {"authorization": f"Bearer {jwt(SECRET, exp=NOW + 600, alg='none')}"}),
        ("locked", {"authorization": f"Bearer {jwt(SECRET, exp=NOW + 600, iat=NOW + 3600)}"}),
        ("locked", {"authorization": "Bearer a.b.c"}),
        ("expired", {"x-omni-webhook-secret": OLD}),
        ("nosecret", {}),
        ("nosecret", {"x-omni-webhook-secret": ""}),
        ("nobody", {"x-omni-webhook-secret": SECRET}),
        ("disco", {"x-omni-webhook-secret": SECRET}),
    ],
    ids=[
        "none",
        "wrong",
        "another-instances-secret",
        "prefix",
        "basic-scheme",
        "plain-bearer",
        "expired-jwt",
        "jwt-of-another-secret",
        "jwt-alg-none",
        "jwt-issued-in-the-future",
        "garbage-jwt",
        "previous-after-grace",
        "instance-without-secret",
        "empty-secret",
        "unknown-instance",
        "instance-of-another-channel",
    ],
)
async def test_forged_webhooks_are_unauthenticated_and_store_nothing(
    store: InboxStore, instance: str, headers: dict[str, str]
) -> None:
    with pytest.raises(errors.UnauthenticatedError) as failure:
        await core(store).receive_webhook(instance, "whatsapp", body(upsert("FORGED")), headers)
    # One answer for every case, so an unknown instance cannot be told from a wrong secret.
    assert (failure.value.message, failure.value.reason) == ("webhook authentication failed", "WEBHOOK_UNAUTHENTICATED")
    assert await store.count_by_state() == {}


async def test_authentication_comes_before_parsing(store: InboxStore) -> None:
    with pytest.raises(errors.UnauthenticatedError):
        await core(store).receive_webhook("locked", "whatsapp", b"<html>not json", {})
    with pytest.raises(errors.InvalidArgumentError):
        await core(store).receive_webhook("locked", "whatsapp", b"<html>not json", {"x-omni-webhook-secret": SECRET})


async def test_a_secret_the_cache_does_not_know_yet_is_checked_against_the_router(store: InboxStore) -> None:
    """After a rotation the channel may post with the new secret before the watch stream updates the cache: one fresh
    read (the router's) decides, and a wrong secret still fails after it."""
    stale = DictDirectory(Instance(name="locked", id="id-locked", webhook_secret=OTHER))
    fresh = DictDirectory(LOCKED)
    reads: list[str] = []

    async def refresh(name: str) -> Instance:
        reads.append(name)
        return await fresh.get(name)

    ingress = IngressCore(store, stale, refresh=refresh)
    result = await ingress.receive_webhook("locked", None, body(upsert("NEW")), {"x-omni-webhook-secret": SECRET})
    assert (result.disposition, reads) == (ACCEPTED, ["locked"])
    with pytest.raises(errors.UnauthenticatedError):
        await ingress.receive_webhook("locked", None, body(upsert("BAD")), {"x-omni-webhook-secret": "wrong"})
