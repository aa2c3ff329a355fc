"""The SSRF guard: refused fetches never reach their target (the servers record nothing)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable

import pytest

from tests.workers.harvest.server import LocalServer, Reply, jpeg
from workers.harvest.download import Download, Downloader, FetchLimits
from workers.harvest.ssrf import (
    AddressPolicy,
    AddrInfo,
    FetchRefused,
    Guard,
    address_problem,
    plain_socket,
    system_resolver,
)

LIMITS = FetchLimits(concurrency=4, per_host=2, total_timeout=5, retries=0, backoff=0.01)


class LoopbackOnly:
    """A socket factory under the guard: records every socket the guard lets be opened and
    opens it only for loopback, never beyond.

    A safety net for the tests themselves: were the guard broken, nothing would leave the
    machine, and the recorded attempts make the test fail.
    """

    def __init__(self) -> None:
        self.attempts: list[str] = []

    def __call__(self, addr_info: AddrInfo) -> socket.socket:
        ip = str(addr_info[4][0])
        self.attempts.append(ip)
        if not ipaddress.ip_address(ip).is_loopback:
            raise OSError(f"test refuses to connect to {ip}")
        return plain_socket(addr_info)


def fetch(
    url: str,
    allow: str = "",
    sockets: LoopbackOnly | None = None,
    names: dict[str, list[str]] | None = None,
) -> Download:
    async def resolver(host: str, port: int) -> list[str]:
        return names[host] if names is not None else await system_resolver(host, port)

    async def run() -> Download:
        policy = AddressPolicy.from_setting(allow)
        async with Downloader(LIMITS, policy, resolver, sockets or LoopbackOnly()) as dl:
            return await dl.fetch(url)

    return asyncio.run(run())


@pytest.fixture
def target() -> Iterable[LocalServer]:
    with LocalServer(
        {"/": lambda r: Reply(body=jpeg(), headers={"Content-Type": "image/jpeg"})}
    ) as server:
        yield server


def test_allowlisted_loopback_is_fetched(target: LocalServer) -> None:
    result = fetch(f"{target.url}/cat.jpg", allow="127.0.0.1")
    assert result.reason is None and result.format == "jpeg"
    assert target.hits() == 1


def test_loopback_without_allowlist_is_refused(target: LocalServer) -> None:
    result = fetch(f"{target.url}/cat.jpg")
    assert result.reason == "blocked address"
    assert "loopback" in result.detail
    assert target.hits() == 0


def test_ipv4_mapped_ipv6_loopback_is_refused_even_with_ipv4_allowlist(target: LocalServer) -> None:
    result = fetch(f"http://[::ffff:127.0.0.1]:{target.port}/cat.jpg", allow="127.0.0.1")
    assert result.reason == "blocked address"
    assert target.hits() == 0


def test_metadata_address_is_refused_before_any_connect() -> None:
    sockets = LoopbackOnly()
    result = fetch("http://169.254.169.254/latest/meta-data/", sockets=sockets)
    assert result.reason == "blocked address"
    assert "link-local" in result.detail
    assert sockets.attempts == []


def test_redirect_to_loopback_is_refused(target: LocalServer) -> None:
    to_target = f"{target.url}/cat.jpg"
    with LocalServer({"/": lambda r: Reply(302, headers={"Location": to_target})}) as hop:
        # The first hop is allowed by its name only; the redirect names a loopback address.
        result = fetch(f"http://localhost:{hop.port}/go", allow="localhost")
        assert hop.hits() == 1
    assert result.reason == "blocked address"
    assert target.hits() == 0


def test_file_url_is_refused() -> None:
    sockets = LoopbackOnly()
    result = fetch("file:///etc/passwd", sockets=sockets)
    assert result.reason == "blocked scheme"
    assert sockets.attempts == []


def test_machine_hostname_resolving_to_loopback_is_refused(target: LocalServer) -> None:
    name = socket.gethostname()
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(name, target.port)}
    except OSError:
        pytest.skip(f"this machine's name {name!r} does not resolve")
    if "127.0.0.1" not in addresses:
        pytest.skip(f"{name!r} resolves to {addresses}, not to 127.0.0.1 where the target listens")
    result = fetch(f"http://{name}:{target.port}/cat.jpg", allow="")
    assert result.reason == "blocked address"
    assert target.hits() == 0


@pytest.mark.parametrize(
    "answer",
    [["10.0.0.7"], ["192.168.1.20"], ["fd00::5"], ["93.184.215.14", "172.16.0.3"]],
    ids=["10/8", "192.168/16", "ula", "mixed-answer"],
)
def test_name_resolving_to_private_address_is_refused(answer: list[str]) -> None:
    sockets = LoopbackOnly()
    result = fetch(
        "http://intranet.example/x.jpg", sockets=sockets, names={"intranet.example": answer}
    )
    assert result.reason == "blocked address"
    assert "private" in result.detail
    assert sockets.attempts == []


def test_the_socket_is_checked_for_the_host_being_fetched() -> None:
    # The last line: whatever address reaches the socket factory (aiohttp resolves no IP
    # literal, a cache could answer for a name) is judged again, for the host of the request.
    sockets = LoopbackOnly()
    guard = Guard(AddressPolicy.from_setting("localhost"), socket_factory=sockets)
    loopback: AddrInfo = (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 80))

    async def open_for(host: str) -> None:
        guard.fetching(host)
        guard.open_socket(loopback).close()

    asyncio.run(open_for("localhost"))  # allowlisted by name
    assert sockets.attempts == ["127.0.0.1"]
    with pytest.raises(FetchRefused, match="loopback"):
        asyncio.run(open_for("images.example"))
    assert sockets.attempts == ["127.0.0.1"]


def test_a_public_answer_is_connected_to_exactly() -> None:
    sockets = LoopbackOnly()
    names = {"images.example": ["93.184.215.14"]}
    result = fetch("http://images.example:8080/x.jpg", sockets=sockets, names=names)
    # The guard let the public address through; the test's own net stopped it there.
    assert sockets.attempts == ["93.184.215.14"]
    assert result.reason == "connection error"


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("0.0.0.0", "unspecified"),
        ("127.8.9.10", "loopback"),
        ("10.1.2.3", "private"),
        ("172.20.0.1", "private"),
        ("100.64.0.1", "not globally routable"),
        ("169.254.169.254", "link-local"),
        ("224.0.0.251", "multicast"),
        ("240.0.0.1", "reserved"),
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fe80::1", "link-local"),
        ("fc00::1", "private"),
        ("ff02::1", "multicast"),
        ("::ffff:10.0.0.1", "private, IPv4 inside IPv6"),
        ("::127.0.0.1", "loopback, IPv4 inside IPv6"),
        ("2002:a9fe:a9fe::", "link-local, IPv4 inside IPv6"),
        ("64:ff9b::a00:1", "private, IPv4 inside IPv6"),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo tunnel"),
        ("8.8.8.8", None),
        ("2606:4700:4700::1111", None),
    ],
)
def test_address_problems(address: str, problem: str | None) -> None:
    assert address_problem(ipaddress.ip_address(address)) == problem


def test_allowlist_setting_parses_hosts_and_networks() -> None:
    policy = AddressPolicy.from_setting(" 127.0.0.1, localhost ,10.0.0.0/8,[::1]")
    assert policy.hosts == {"localhost"}
    assert policy.refusal("x", "10.9.9.9") is None
    assert policy.refusal("localhost", "127.0.0.1") is None
    assert policy.refusal("x", "::1") is None
    assert policy.refusal("x", "192.168.0.1") is not None
