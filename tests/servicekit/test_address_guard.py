"""The address guard: literal checks, and a guarded aiohttp session that checks what a name resolves to.

Names are resolved by `StaticDns`, a real `AbstractResolver` answering from a table (no test reaches real DNS);
the session then connects to what it answered, so "resolves to 127.0.0.1" reaches the local test server and
"resolves to 169.254.169.254" must be refused before any connection is made.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from servicekit.address_guard import (
    ALLOW_SETTING,
    AddressRefusedError,
    GuardedResolver,
    address_refusal,
    guarded_session,
    host_refusal,
    url_refusal,
)


class StaticDns(AbstractResolver):
    """Answers each name with its next configured list of addresses (the last one repeats), like a DNS server
    whose records change between lookups (rebinding)."""

    def __init__(self, table: dict[str, list[list[str]]]) -> None:
        self.table = table
        self.lookups: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.lookups.append(host)
        answers = self.table[host]
        addresses = answers.pop(0) if len(answers) > 1 else answers[0]
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in addresses
        ]

    async def close(self) -> None:
        return None


@pytest.mark.parametrize(
    "address",
    [
        "169.254.169.254",
        "169.254.0.1",
        "169.254.170.2",
        "fe80::1",
        "fe80::1%eth0",
        "febf:ffff::1",
        "fd00:ec2::254",
        "::ffff:169.254.169.254",
        "64:ff9b::a9fe:a9fe",
        "100.100.100.200",
        "168.63.129.16",
    ],
)
def test_link_local_and_metadata_addresses_are_refused(address: str) -> None:
    reason = address_refusal(address)
    assert reason is not None
    assert "link-local" in reason or "metadata" in reason


@pytest.mark.parametrize(
    "address", ["127.0.0.1", "::1", "10.0.0.5", "172.16.4.2", "192.168.1.10", "fd12:3456::1", "8.8.8.8", "fec0::1"]
)
def test_loopback_private_and_public_addresses_are_allowed(address: str) -> None:
    assert address_refusal(address) is None


def test_metadata_names_and_literal_hosts() -> None:
    assert host_refusal("metadata.google.internal") == "metadata.google.internal is a cloud metadata host"
    assert host_refusal("METADATA.Google.Internal.") is not None
    assert host_refusal("[fe80::1]") is not None
    assert host_refusal("agent.example.com") is None
    assert host_refusal("localhost") is None


def test_url_refusal_names_the_setting_and_honours_it() -> None:
    reason = url_refusal("http://169.254.169.254/latest/meta-data/")
    assert reason == f"169.254.169.254 is a cloud metadata address; set {ALLOW_SETTING}=true to allow it"
    assert url_refusal("http://[fd00:ec2::254]:80/") is not None
    assert url_refusal("https://metadata.google.internal/computeMetadata/v1/") is not None
    assert url_refusal("http://169.254.169.254/", allow_link_local=True) is None
    assert url_refusal("http://127.0.0.1:8000") is None
    assert url_refusal("http://agent.internal:8000/api") is None
    assert url_refusal("http://[::1") is None  # malformed: the caller's URL check reports it


@pytest.fixture
async def local_server() -> AsyncIterator[int]:
    """A real HTTP server on 127.0.0.1 answering "ok"; yields its port."""

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", ok)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


async def test_a_name_resolving_to_metadata_is_refused_before_connecting(local_server: int) -> None:
    dns = StaticDns(
        {
            "agent.example": [["127.0.0.1"]],
            "evil.example": [["169.254.169.254"]],
            "mixed.example": [["127.0.0.1", "fd00:ec2::254"]],
        }
    )
    async with guarded_session(resolver=dns) as session:
        async with session.get(f"http://agent.example:{local_server}/") as response:
            assert await response.text() == "ok"
        for name in ("evil.example", "mixed.example"):
            with pytest.raises(AddressRefusedError, match=f"{name} resolves to a refused address"):
                await session.get(f"http://{name}:{local_server}/")
    assert dns.lookups == ["agent.example", "evil.example", "mixed.example"]


async def test_dns_rebinding_is_caught_on_the_next_lookup(local_server: int) -> None:
    """The name passed validation (and a first call) as a harmless address, then its record changed."""
    dns = StaticDns({"rebind.example": [["127.0.0.1"], ["169.254.169.254"]]})
    async with guarded_session(resolver=dns, use_dns_cache=False, force_close=True) as session:
        async with session.get(f"http://rebind.example:{local_server}/") as response:
            assert response.status == 200
        with pytest.raises(AddressRefusedError, match=r"169\.254\.169\.254 is a cloud metadata address"):
            await session.get(f"http://rebind.example:{local_server}/")


@pytest.mark.parametrize(
    "url",
    ["http://169.254.169.254/latest/meta-data/", "http://[fe80::1]:8080/", "http://[::ffff:169.254.169.254]/"],
)
async def test_ip_literals_are_refused_by_the_session(url: str) -> None:
    """aiohttp skips the resolver for IP literals; the session's request hook refuses them instead."""
    dns = StaticDns({})
    async with guarded_session(resolver=dns) as session:
        with pytest.raises(AddressRefusedError, match="refused to call"):
            await session.get(url, timeout=aiohttp.ClientTimeout(total=2))
    assert dns.lookups == []


async def test_the_resolver_refuses_whatever_the_inner_one_answers() -> None:
    resolver = GuardedResolver(StaticDns({"metadata.google.internal": [["10.1.2.3"]]}))
    with pytest.raises(AddressRefusedError, match="cloud metadata host"):
        await resolver.resolve("metadata.google.internal", 80)
    await resolver.close()


async def test_allowing_link_local_turns_the_guard_off(local_server: int) -> None:
    dns = StaticDns({"meta.example": [["127.0.0.1"]]})
    async with guarded_session(allow_link_local=True, resolver=dns) as session:
        async with session.get(f"http://meta.example:{local_server}/") as response:
            assert response.status == 200
        assert not session.trace_configs
