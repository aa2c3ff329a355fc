"""The async image downloader: bounded, guarded, capped, retried.

One aiohttp session over the SSRF guard (its resolver and socket factory, see
workers.harvest.ssrf). A global semaphore bounds the fetches in flight and a per-host one
keeps a single site from being hammered. Bodies are streamed and cut at the byte cap
whatever Content-Length claims, and checked by magic bytes as soon as the first bytes
arrive. Only timeouts, 429 and 5xx are retried: the other failures do not get better by
asking again.

aiohttp rather than httpx: its C HTTP parser and stream reader cost about a tenth of the
CPU per download (measured 0.3 ms against 2.5 ms a 100 kB image), and on a worker that
also decodes what it downloads, CPU is what bounds a harvest.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType

import aiohttp
from yarl import URL

from core.config import Settings
from workers.harvest.sniff import SNIFF_BYTES, describe, sniff_image
from workers.harvest.ssrf import (
    AddressPolicy,
    FetchRefused,
    Guard,
    GuardedResolver,
    Resolver,
    SocketFactory,
    check_url,
    plain_socket,
    system_resolver,
)

USER_AGENT = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
ACCEPT = "image/avif,image/webp,image/apng,image/*,*/*;q=0.8"
REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
MAX_HEADER_FIELD = 64 * 1024


@dataclass(frozen=True)
class FetchLimits:
    concurrency: int = 64
    per_host: int = 8
    max_bytes: int = 20 * 1024 * 1024
    connect_timeout: float = 10.0
    read_timeout: float = 20.0
    total_timeout: float = 30.0
    max_redirects: int = 5
    retries: int = 2
    backoff: float = 0.5

    @classmethod
    def from_settings(cls, settings: Settings) -> FetchLimits:
        total = settings.download_timeout
        return cls(
            concurrency=settings.download_concurrency,
            per_host=settings.download_per_host,
            max_bytes=settings.download_max_bytes,
            connect_timeout=min(10.0, total),
            read_timeout=min(20.0, total),
            total_timeout=total,
        )


@dataclass
class Download:
    """What one URL gave: ``data`` on success, else a short ``reason`` and a ``detail``."""

    url: str
    data: bytes | None = None
    reason: str | None = None
    detail: str = ""
    status: int | None = None
    content_type: str | None = None
    format: str | None = None
    final_url: str | None = None
    attempts: int = 0
    retry_after: float | None = None
    fetched_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def retryable(self) -> bool:
        if self.reason == "timeout":
            return True
        return self.status is not None and (self.status == 429 or self.status >= 500)


def _retry_after(value: str | None) -> float | None:
    # Only the delta-seconds form; an HTTP date from an image host is not worth parsing.
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


class Downloader:
    """Use as ``async with Downloader(limits, policy) as dl: await dl.fetch(url)``."""

    def __init__(
        self,
        limits: FetchLimits,
        policy: AddressPolicy,
        resolver: Resolver = system_resolver,
        socket_factory: SocketFactory = plain_socket,
    ) -> None:
        self.limits = limits
        self._guard = Guard(policy, resolver, socket_factory)
        self._slots = asyncio.Semaphore(limits.concurrency)
        self._hosts: dict[str, asyncio.Semaphore] = {}
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Downloader:
        connector = aiohttp.TCPConnector(
            limit=self.limits.concurrency,
            limit_per_host=self.limits.per_host,
            resolver=GuardedResolver(self._guard),
            # Every new connection asks the guard; nothing cached outside it.
            use_dns_cache=False,
            socket_factory=self._guard.open_socket,
            # Addresses one after another, in the task that asked: the guard's refusal
            # reaches the caller as it is.
            happy_eyeballs_delay=None,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(
                total=None,  # the whole attempt, redirects included, is bounded in _attempt
                connect=self.limits.connect_timeout,  # name resolution and connect
                sock_connect=self.limits.connect_timeout,
                sock_read=self.limits.read_timeout,
            ),
            headers={"User-Agent": USER_AGENT, "Accept": ACCEPT, "Accept-Language": "en"},
            # Environment proxies are ignored: a proxy would connect on our behalf and the
            # guard would only ever see the proxy's address.
            trust_env=False,
            # Image hosts get no cookies from each other.
            cookie_jar=aiohttp.DummyCookieJar(),
            # CDNs send long cookies and policy headers; browsers take them, so do we.
            max_field_size=MAX_HEADER_FIELD,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def fetch(self, url: str, referer: str | None = None) -> Download:
        try:
            host = URL(url).host or ""
        except ValueError:
            host = ""
        per_host = self._hosts.setdefault(host, asyncio.Semaphore(self.limits.per_host))
        attempt = 0
        while True:
            attempt += 1
            async with per_host, self._slots:
                result = await self._attempt(url, referer)
            result.attempts = attempt
            if not result.retryable or attempt > self.limits.retries:
                return result
            # Slots are released while waiting, so a slow host does not idle the pool.
            base = self.limits.backoff * 2 ** (attempt - 1)
            delay = result.retry_after if result.retry_after is not None else base
            await asyncio.sleep(min(delay, 30.0) + random.uniform(0, self.limits.backoff))

    async def _attempt(self, url: str, referer: str | None) -> Download:
        try:
            async with asyncio.timeout(self.limits.total_timeout):
                return await self._follow(url, referer)
        except TimeoutError as exc:
            # aiohttp's connect and read timeouts are TimeoutErrors too.
            detail = str(exc) or f"no complete answer within {self.limits.total_timeout:g} s"
            return Download(url, reason="timeout", detail=detail)
        except FetchRefused as exc:
            return Download(url, reason=exc.reason, detail=exc.detail)
        except (ValueError, aiohttp.InvalidURL) as exc:
            return Download(url, reason="invalid URL", detail=str(exc))
        except aiohttp.ClientError as exc:
            return Download(url, reason="connection error", detail=f"{type(exc).__name__}: {exc}")

    async def _follow(self, url: str, referer: str | None) -> Download:
        assert self._session is not None, "use the Downloader as an async context manager"
        current = URL(url)
        headers = {"Referer": referer} if referer else {}
        for _hop in range(self.limits.max_redirects + 1):
            check_url(current)
            self._guard.fetching(current.host or "")
            async with self._session.get(
                current, headers=headers, allow_redirects=False
            ) as response:
                location = response.headers.get("Location")
                if response.status in REDIRECT_CODES and location:
                    current = current.join(URL(location))
                    continue
                if not 200 <= response.status < 300:
                    return Download(
                        url,
                        reason=f"HTTP {response.status}",
                        status=response.status,
                        content_type=response.headers.get("Content-Type"),
                        final_url=str(current),
                        retry_after=_retry_after(response.headers.get("Retry-After")),
                    )
                return await self._read(url, current, response)
        return Download(
            url, reason="too many redirects", detail=f"more than {self.limits.max_redirects}"
        )

    async def _read(self, url: str, final: URL, response: aiohttp.ClientResponse) -> Download:
        result = Download(
            url,
            status=response.status,
            content_type=response.headers.get("Content-Type"),
            final_url=str(final),
        )
        cap = self.limits.max_bytes
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > cap:
            result.reason, result.detail = "too large", f"Content-Length {declared} > {cap} bytes"
            response.close()
            return result
        chunks: list[bytes] = []
        size = 0
        sniffed = False
        # Decoded bytes are counted, so a compressed bomb hits the cap as well.
        async for chunk in response.content.iter_any():
            chunks.append(chunk)
            size += len(chunk)
            if size > cap:
                result.reason, result.detail = "too large", f"more than {cap} bytes"
                response.close()
                return result
            if not sniffed and size >= SNIFF_BYTES:
                sniffed = True
                if not self._recognise(result, b"".join(chunks)):
                    response.close()
                    return result
        data = b"".join(chunks)
        if not sniffed and not self._recognise(result, data):
            return result
        result.data = data
        return result

    @staticmethod
    def _recognise(result: Download, head: bytes) -> bool:
        result.format = sniff_image(head)
        if result.format is None:
            result.reason = "not an image"
            result.detail = f"{describe(head)} ({result.content_type or 'no content type'})"
            return False
        return True
