"""Refuses outbound calls to link-local and cloud-metadata addresses (server-side request forgery).

Tenants choose where the hub calls (`agent_api_url`, `evolution_url`, media URLs in agent replies). Left alone, a
tenant could point one at 169.254.169.254 and have the hub read the cloud provider's credentials. Such addresses
are refused unless the operator allows them (`AUTOMAGIK_OMNI_ALLOW_LINK_LOCAL_URLS`). Loopback and private
(RFC 1918) addresses stay allowed on purpose: tenants run agents on the same host or network in development, and
an operator who must wall those off does so with network policy, not per URL.

Two checks, because a name can change its address after validation (DNS rebinding):
- `url_refusal` checks the literal host of a URL when an instance is validated (an IP literal or a known metadata
  name; names are not resolved there, since DNS may differ at call time anyway);
- `guarded_session` makes every connection of an aiohttp session go through `GuardedResolver`, which refuses a
  name whose *resolved* addresses include a refused one: aiohttp connects to exactly the addresses the resolver
  returns, so what was checked is what is dialled. aiohttp skips the resolver for IP literals, so the session
  also checks each request's literal host before it starts (a request hook), which covers URLs validated before
  this guard existed and media URLs no validation saw.
"""

from __future__ import annotations

import ipaddress
import socket
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

ALLOW_SETTING = "AUTOMAGIK_OMNI_ALLOW_LINK_LOCAL_URLS"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

LINK_LOCAL_NETWORKS: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (
    ipaddress.ip_network("169.254.0.0/16"),
    ipaddress.ip_network("fe80::/10"),
)
METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle (also link-local)
        "fd00:ec2::254",  # AWS over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "168.63.129.16",  # Azure wire server
        "192.0.0.192",  # Oracle Cloud (legacy)
    )
)
METADATA_HOSTNAMES = frozenset(
    {"metadata.google.internal", "metadata.goog", "metadata", "instance-data", "instance-data.ec2.internal"}
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class AddressRefusedError(aiohttp.ClientConnectionError):
    """A call to a link-local or metadata address the operator did not allow.

    A configuration error, never transient: retrying reaches the same address. It is an aiohttp
    `ClientConnectionError` but not an `OSError`, so aiohttp lets it through its resolver unwrapped.
    """


def _embedded_ipv4(address: IPAddress) -> IPAddress:
    """The IPv4 address inside an IPv4-mapped (::ffff:a.b.c.d) or NAT64 (64:ff9b::a.b.c.d) IPv6 address."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def address_refusal(address: str | IPAddress) -> str | None:
    """Why calling `address` is refused (link-local or cloud metadata), or None when it is allowed."""
    if isinstance(address, str):
        try:
            address = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id (fe80::1%eth0)
        except ValueError:
            return None
    for candidate in {address, _embedded_ipv4(address)}:
        if candidate in METADATA_ADDRESSES:
            return f"{candidate} is a cloud metadata address"
        if any(candidate in network for network in LINK_LOCAL_NETWORKS):
            return f"{candidate} is a link-local address"
    return None


def host_refusal(host: str) -> str | None:
    """Why a URL host as written is refused: an IP literal (see `address_refusal`) or a metadata name."""
    name = host.strip("[]").rstrip(".").lower()
    if name in METADATA_HOSTNAMES:
        return f"{name} is a cloud metadata host"
    return address_refusal(name)


def url_refusal(url: str, *, allow_link_local: bool = False) -> str | None:
    """Why the hub must not call `url` (checking its literal host only), or None; always None when allowed."""
    if allow_link_local:
        return None
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        return None  # not a URL at all: the caller's own URL check says so
    reason = host_refusal(host)
    return f"{reason}; set {ALLOW_SETTING}=true to allow it" if reason else None


class GuardedResolver(AbstractResolver):
    """Resolves with aiohttp's default resolver, then refuses the name if any answer is a refused address.

    Refusing the whole name (rather than dropping the bad answers) is deliberate: a public name that also
    resolves to a metadata address is an attack or a misconfiguration, and either way the operator should see it.
    """

    def __init__(self, inner: AbstractResolver | None = None) -> None:
        self._inner = inner or DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """The addresses of `host`; raises `AddressRefusedError` when one of them is refused."""
        results = await self._inner.resolve(host, port, family)
        reason = host_refusal(host)
        for result in results:
            reason = reason or address_refusal(result["host"])
        if reason:
            raise AddressRefusedError(f"{host} resolves to a refused address: {reason}; set {ALLOW_SETTING}=true")
        return results

    async def close(self) -> None:
        await self._inner.close()


async def _check_request_host(
    session: aiohttp.ClientSession, context: SimpleNamespace, params: aiohttp.TraceRequestStartParams
) -> None:
    reason = host_refusal(params.url.raw_host or "")
    if reason:
        raise AddressRefusedError(f"refused to call {params.url.host}: {reason}; set {ALLOW_SETTING}=true")


def guarded_session(
    *, allow_link_local: bool = False, resolver: AbstractResolver | None = None, **connector_options: Any
) -> aiohttp.ClientSession:
    """An aiohttp session that refuses link-local and metadata addresses (unless `allow_link_local`).

    `resolver` is the DNS actually asked (aiohttp's default when None); `connector_options` go to the
    `TCPConnector` (limit, limit_per_host, ...). Callers still pass `allow_redirects=False` on each request: a
    redirect must never move a call to a host nobody validated.
    """
    if allow_link_local:
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(resolver=resolver, **connector_options))
    hooks = aiohttp.TraceConfig()
    hooks.on_request_start.append(_check_request_host)
    connector = aiohttp.TCPConnector(resolver=GuardedResolver(resolver), **connector_options)
    return aiohttp.ClientSession(connector=connector, trace_configs=[hooks])
