"""The guard on every server-side fetch against server-side request forgery.

Image URLs come from search engines and from users, so a URL may point at the cloud
metadata service, the database or anything else on the worker's network. The checks happen
where connections are made, under aiohttp: the guarded resolver answers only when every
address of a name is allowed (aiohttp then connects to exactly those addresses, so a second
DNS answer cannot swap in another one), and the guarded socket factory refuses to open a
socket for an address that is not allowed for the host being fetched, which also covers
IP-literal URLs (aiohttp does not resolve those). Every redirect is a new request through
the same two checks.
"""

from __future__ import annotations

import asyncio
import contextvars
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

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


def check_url(url: URL) -> None:
    """Refuse what never reaches a socket: other schemes, missing hosts."""
    if url.scheme not in ALLOWED_SCHEMES:
        raise FetchRefused("blocked scheme", f"{url.scheme or 'no'} scheme, only http and https")
    if not url.host:
        raise FetchRefused("invalid URL", "no host")


async def system_resolver(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


AddrInfo = tuple[Any, ...]  # socket.getaddrinfo's (family, type, proto, canonname, sockaddr)
SocketFactory = Callable[[AddrInfo], socket.socket]


def plain_socket(addr_info: AddrInfo) -> socket.socket:
    family, type_, proto = addr_info[0], addr_info[1], addr_info[2]
    return socket.socket(family=family, type=type_, proto=proto)


# The host of the request being made: the socket factory runs in the task that makes it.
_fetching: contextvars.ContextVar[str | None] = contextvars.ContextVar("fetching", default=None)


class Guard:
    """The policy applied where aiohttp resolves names and opens sockets.

    ``fetching(host)`` marks the host of the request about to be made, so that the socket
    check judges the address for that host (the allowlist may name hosts).
    """

    def __init__(
        self,
        policy: AddressPolicy,
        resolver: Resolver = system_resolver,
        socket_factory: SocketFactory = plain_socket,
    ) -> None:
        self.policy = policy
        self._resolve = resolver
        self._socket = socket_factory

    @staticmethod
    def fetching(host: str) -> None:
        _fetching.set(host)

    async def addresses(self, host: str, port: int) -> list[str]:
        try:
            addresses = await self._resolve(host, port)
        except OSError as exc:
            raise OSError(f"cannot resolve {host}: {exc}") from exc
        if not addresses:
            raise OSError(f"{host} has no address")
        # One bad address refuses the name: a mixed answer is what a rebinding attack looks like.
        for ip in addresses:
            why = self.policy.refusal(host, ip)
            if why:
                raise FetchRefused("blocked address", why)
        return addresses

    def open_socket(self, addr_info: AddrInfo) -> socket.socket:
        ip = str(addr_info[4][0])
        host = _fetching.get() or ip
        why = self.policy.refusal(host, ip)
        if why:
            raise FetchRefused("blocked address", why)
        return self._socket(addr_info)


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver interface over ``Guard.addresses``."""

    def __init__(self, guard: Guard) -> None:
        self.guard = guard

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(
                hostname=host,
                host=ip,
                port=port,
                family=socket.AF_INET6 if ":" in ip else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for ip in await self.guard.addresses(host, port)
        ]

    async def close(self) -> None:
        return None
