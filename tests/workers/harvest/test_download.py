"""The downloader against a real local server: caps, retries, timeouts, magic bytes, limits."""

from __future__ import annotations

import asyncio
import gzip
import threading
import time
from collections.abc import Iterable

import pytest

from tests.workers.harvest.server import LocalServer, Reply, Request, Route, jpeg
from workers.harvest.download import Download, Downloader, FetchLimits
from workers.harvest.sniff import sniff_image
from workers.harvest.ssrf import AddressPolicy

ALLOW = AddressPolicy.from_setting("127.0.0.1")
LIMITS = FetchLimits(
    concurrency=8, per_host=8, max_bytes=50_000, total_timeout=5, retries=2, backoff=0.01
)


def fetch_all(
    urls: list[str], limits: FetchLimits = LIMITS, referer: str | None = None
) -> list[Download]:
    async def run() -> list[Download]:
        async with Downloader(limits, ALLOW) as dl:
            return await asyncio.gather(*(dl.fetch(u, referer) for u in urls))

    return asyncio.run(run())


class Flaky:
    """Fails ``times`` times with ``status``, then serves a JPEG."""

    def __init__(self, status: int, times: int, headers: dict[str, str] | None = None) -> None:
        self.status, self.left, self.headers = status, times, headers or {}

    def __call__(self, request: Request) -> Reply:
        if self.left:
            self.left -= 1
            return Reply(self.status, b"busy", self.headers)
        return Reply(body=jpeg(), headers={"Content-Type": "image/jpeg"})


class Gauge:
    """Serves a JPEG slowly and remembers the most requests it had in flight at once."""

    def __init__(self) -> None:
        self.now = self.peak = 0
        self.lock = threading.Lock()

    def __call__(self, request: Request) -> Reply:
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
        time.sleep(0.1)
        with self.lock:
            self.now -= 1
        return Reply(body=jpeg(), headers={"Content-Type": "image/jpeg"})


@pytest.fixture
def server() -> Iterable[LocalServer]:
    routes: dict[str, Route] = {
        "/ok.jpg": lambda r: Reply(body=jpeg(), headers={"Content-Type": "image/jpeg"}),
        "/page.html": lambda r: Reply(
            body=b"<!DOCTYPE html><html>login</html>", headers={"Content-Type": "image/jpeg"}
        ),
        "/big": lambda r: Reply(body=b"\xff\xd8\xff" + b"0" * 60_000),
        "/stream": lambda r: Reply(body=b"\xff\xd8\xff" + b"0" * 60_000, unsized=True),
        # 60 kB of JPEG-looking bytes in a 100-byte gzip body: the cap counts what it inflates to.
        "/bomb.jpg": lambda r: Reply(
            body=gzip.compress(b"\xff\xd8\xff" + bytes(60_000)),
            headers={"Content-Type": "image/jpeg", "Content-Encoding": "gzip"},
        ),
        "/cookie.jpg": lambda r: Reply(
            body=jpeg(), headers={"Content-Type": "image/jpeg", "Set-Cookie": "c=" + "x" * 20_000}
        ),
        "/slow": lambda r: Reply(body=jpeg(), delay=1.0),
        "/loop": lambda r: Reply(302, headers={"Location": "/loop"}),
        "/moved": lambda r: Reply(301, headers={"Location": "/ok.jpg"}),
        "/flaky503": Flaky(503, 2),
        "/flaky429": Flaky(429, 1, {"Retry-After": "0"}),
        "/down500": Flaky(500, 99),
        "/gauge": Gauge(),
    }
    with LocalServer(routes) as srv:
        yield srv


def test_image_is_downloaded_with_browser_like_headers(server: LocalServer) -> None:
    [result] = fetch_all([f"{server.url}/ok.jpg"], referer="http://127.0.0.1/page")
    assert result.reason is None and result.format == "jpeg" and result.status == 200
    assert result.data == jpeg() and result.content_type == "image/jpeg"
    headers = server.requests[0].headers
    assert (
        headers["User-Agent"].startswith("Mozilla/5.0")
        and headers["Referer"] == "http://127.0.0.1/page"
    )


def test_a_long_header_is_taken_as_browsers_take_it(server: LocalServer) -> None:
    [result] = fetch_all([f"{server.url}/cookie.jpg"])
    assert result.reason is None and result.data == jpeg()


def test_html_labelled_as_jpeg_is_not_an_image(server: LocalServer) -> None:
    [result] = fetch_all([f"{server.url}/page.html"])
    assert result.reason == "not an image" and result.data is None
    assert "HTML page" in result.detail


def test_byte_cap_holds_with_and_without_content_length(server: LocalServer) -> None:
    sized, unsized = fetch_all([f"{server.url}/big", f"{server.url}/stream"])
    assert sized.reason == "too large" and "Content-Length" in sized.detail
    assert unsized.reason == "too large" and "more than 50000" in unsized.detail


def test_a_compressed_body_is_capped_by_what_it_inflates_to(server: LocalServer) -> None:
    [result] = fetch_all([f"{server.url}/bomb.jpg"])
    assert result.reason == "too large" and result.data is None


def test_404_is_not_retried(server: LocalServer) -> None:
    [result] = fetch_all([f"{server.url}/missing.jpg"])
    assert result.reason == "HTTP 404" and result.attempts == 1
    assert server.hits("/missing") == 1


def test_503_and_429_are_retried(server: LocalServer) -> None:
    r503, r429, r500 = fetch_all(
        [f"{server.url}/flaky503", f"{server.url}/flaky429", f"{server.url}/down500"]
    )
    assert r503.reason is None and r503.attempts == 3
    assert r429.reason is None and r429.attempts == 2
    assert r500.reason == "HTTP 500" and r500.attempts == 3


def test_timeout_is_retried_then_reported(server: LocalServer) -> None:
    limits = FetchLimits(total_timeout=0.3, read_timeout=0.3, retries=1, backoff=0.01)
    [result] = fetch_all([f"{server.url}/slow"], limits)
    assert result.reason == "timeout" and result.attempts == 2
    assert server.hits("/slow") == 2


def test_redirects_are_followed_up_to_the_limit(server: LocalServer) -> None:
    moved, looping = fetch_all([f"{server.url}/moved", f"{server.url}/loop"])
    assert moved.reason is None and moved.final_url == f"{server.url}/ok.jpg"
    assert looping.reason == "too many redirects"
    assert server.hits("/loop") == 6


def test_per_host_and_global_caps(server: LocalServer) -> None:
    gauge = server.routes["/gauge"]
    assert isinstance(gauge, Gauge)
    fetch_all(
        [f"{server.url}/gauge?{i}" for i in range(12)], FetchLimits(concurrency=8, per_host=3)
    )
    # At most the cap, and the cap is reached: requests do overlap up to it.
    assert gauge.peak == 3
    gauge.peak = 0
    fetch_all(
        [f"{server.url}/gauge?{i}" for i in range(12)], FetchLimits(concurrency=2, per_host=8)
    )
    assert gauge.peak == 2


def test_invalid_urls_have_reasons() -> None:
    results = fetch_all(["not a url", "ftp://example.com/x.jpg", "http:///nohost"])
    assert [r.reason for r in results] == ["blocked scheme", "blocked scheme", "invalid URL"]


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "jpeg"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "png"),
        (b"GIF89a\x01\x00", "gif"),
        (b"RIFF\x10\x00\x00\x00WEBPVP8 ", "webp"),
        (b"\x00\x00\x00\x1cftypavif\x00\x00", "avif"),
        (b"BM6\x00\x00\x00", "bmp"),
        (b"<svg xmlns=", None),
        (b"%PDF-1.7", None),
    ],
)
def test_magic_bytes(head: bytes, kind: str | None) -> None:
    assert sniff_image(head) == kind
