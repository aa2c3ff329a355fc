"""The guard on every server-side fetch against server-side request forgery.

Image URLs come from search engines and from users, so a URL may point at the cloud
metadata service, the database or anything else on the worker's network. The check
happens where the socket is opened: the guarded network backend resolves the name
itself, refuses unless every address is public, connects to the vetted address (so a
second DNS answer cannot swap in another one) and checks the peer address of the
connected socket once more. Every redirect opens its connection through the same
backend, so each hop is checked too (``workers.harvest.transport`` puts it under httpx).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[list[str]]]

ALLOWED_SCHEMES = frozenset({"http", "https"})
# NAT64's well-known prefix carries an IPv4 address in its last 32 bits.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


class FetchRefused(Exception):
    """A fetch the guard will not make; ``reason`` is the short name used in job results."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    # Forms that reach an IPv4 host through an IPv6 address: mapped (::ffff:a.b.c.d),
    # 6to4 (2002::/16), NAT64 and the deprecated IPv4-compatible form (::a.b.c.d).
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64 or (address in _IPV4_COMPATIBLE and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def address_problem(address: IPAddress) -> str | None:
    """Why ``address`` is not a public unicast address, or None when it is."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.teredo is not None:
            return "Teredo tunnel"
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            inner = address_problem(embedded)
            return f"{inner}, IPv4 inside IPv6" if inner else None
    checks = (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("reserved", address.is_reserved),
        ("private", address.is_private),
    )
    for name, hit in checks:
        if hit:
            return name
    return None if address.is_global else "not globally routable"


@dataclass(frozen=True)
class AddressPolicy:
    """Public addresses only, except hosts and networks listed in the allowlist setting."""

    networks: tuple[IPNetwork, ...] = ()
    hosts: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def from_setting(cls, allow: str) -> AddressPolicy:
        networks: list[IPNetwork] = []
        hosts: set[str] = set()
        for entry in (part.strip() for part in allow.split(",")):
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                hosts.add(entry.lower().rstrip("."))
        return cls(tuple(networks), frozenset(hosts))

    def refusal(self, host: str, ip: str) -> str | None:
        """Why connecting to ``ip`` (for the name ``host``) is refused; None when allowed."""
        if host.lower().rstrip(".") in self.hosts:
            return None
        address = ipaddress.ip_address(ip.split("%", 1)[0])
        if any(address in network for network in self.networks):
            return None
        problem = address_problem(address)
        return f"{host} is {ip} ({problem})" if problem else None


def check_url(url: httpx.URL) -> None:
    """Refuse what the guarded backend never sees: other schemes, missing hosts."""
    if url.scheme not in ALLOWED_SCHEMES:
        raise FetchRefused("blocked scheme", f"{url.scheme or 'no'} scheme, only http and https")
    if not url.host:
        raise FetchRefused("invalid URL", "no host")


async def system_resolver(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that only connects to addresses the policy allows."""

    def __init__(
        self,
        policy: AddressPolicy,
        resolver: Resolver = system_resolver,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self.policy = policy
        self.resolver = resolver
        self.inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            addresses = await asyncio.wait_for(self.resolver(host, port), timeout)
        except (OSError, TimeoutError) as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        if not addresses:
            raise httpcore.ConnectError(f"{host} has no address")
        # One bad address refuses the name: a mixed answer is what a rebinding attack looks like.
        for ip in addresses:
            why = self.policy.refusal(host, ip)
            if why:
                raise FetchRefused("blocked address", why)
        error: Exception = httpcore.ConnectError(f"cannot connect to {host}")
        for ip in addresses:
            try:
                stream = await self.inner.connect_tcp(
                    ip, port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
                continue
            peer = stream.get_extra_info("server_addr")
            why = self.policy.refusal(host, str(peer[0])) if peer else None
            if why:
                await stream.aclose()
                raise FetchRefused("blocked address", why)
            return stream
        raise error

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise FetchRefused("blocked address", "unix sockets are never fetched")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)
