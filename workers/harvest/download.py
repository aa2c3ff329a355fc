"""The async image downloader: bounded, guarded, capped, retried.

One httpx.AsyncClient over the SSRF-guarded transport. A global semaphore bounds the
fetches in flight and a per-host one keeps a single site from being hammered. Bodies are
streamed and cut at the byte cap whatever Content-Length claims, and checked by magic
bytes as soon as the first bytes arrive. Only timeouts, 429 and 5xx are retried: the
other failures do not get better by asking again.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType

import httpcore
import httpx

from api.config import Settings
from workers.harvest.sniff import SNIFF_BYTES, describe, sniff_image
from workers.harvest.ssrf import (
    AddressPolicy,
    FetchRefused,
    GuardedBackend,
    Resolver,
    check_url,
    system_resolver,
)
from workers.harvest.transport import guarded_transport

USER_AGENT = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
ACCEPT = "image/avif,image/webp,image/apng,image/*,*/*;q=0.8"
REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})


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
        backend: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self.limits = limits
        self._backend = GuardedBackend(policy, resolver, backend)
        self._slots = asyncio.Semaphore(limits.concurrency)
        self._hosts: dict[str, asyncio.Semaphore] = {}
        self._client: httpx.AsyncClient | None = None

    async def __aenter__(self) -> Downloader:
        timeout = httpx.Timeout(
            connect=self.limits.connect_timeout,
            read=self.limits.read_timeout,
            write=self.limits.read_timeout,
            pool=self.limits.total_timeout,
        )
        self._client = httpx.AsyncClient(
            transport=guarded_transport(
                self._backend, self.limits.concurrency, self.limits.per_host
            ),
            timeout=timeout,
            headers={"User-Agent": USER_AGENT, "Accept": ACCEPT, "Accept-Language": "en"},
            follow_redirects=False,
            trust_env=False,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def fetch(self, url: str, referer: str | None = None) -> Download:
        try:
            host = httpx.URL(url).host
        except httpx.InvalidURL:
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
        except TimeoutError:
            detail = f"no complete answer within {self.limits.total_timeout:g} s"
            return Download(url, reason="timeout", detail=detail)
        except httpx.TimeoutException as exc:
            return Download(url, reason="timeout", detail=type(exc).__name__)
        except FetchRefused as exc:
            return Download(url, reason=exc.reason, detail=exc.detail)
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            return Download(url, reason="invalid URL", detail=str(exc))
        except (httpx.TransportError, httpx.DecodingError) as exc:
            return Download(url, reason="connection error", detail=f"{type(exc).__name__}: {exc}")

    async def _follow(self, url: str, referer: str | None) -> Download:
        assert self._client is not None, "use the Downloader as an async context manager"
        current = httpx.URL(url)
        headers = {"Referer": referer} if referer else {}
        for _hop in range(self.limits.max_redirects + 1):
            check_url(current)
            request = self._client.build_request("GET", current, headers=headers)
            response = await self._client.send(request, stream=True)
            try:
                location = response.headers.get("location")
                if response.status_code in REDIRECT_CODES and location:
                    current = current.join(location)
                    continue
                if not response.is_success:
                    return Download(
                        url,
                        reason=f"HTTP {response.status_code}",
                        status=response.status_code,
                        content_type=response.headers.get("content-type"),
                        final_url=str(current),
                        retry_after=_retry_after(response.headers.get("retry-after")),
                    )
                return await self._read(url, current, response)
            finally:
                await response.aclose()
        return Download(
            url, reason="too many redirects", detail=f"more than {self.limits.max_redirects}"
        )

    async def _read(self, url: str, final: httpx.URL, response: httpx.Response) -> Download:
        result = Download(
            url,
            status=response.status_code,
            content_type=response.headers.get("content-type"),
            final_url=str(final),
        )
        cap = self.limits.max_bytes
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > cap:
            result.reason, result.detail = "too large", f"Content-Length {declared} > {cap} bytes"
            return result
        chunks: list[bytes] = []
        size = 0
        sniffed = False
        # Decoded bytes are counted, so a compressed bomb hits the cap as well.
        async for chunk in response.aiter_bytes():
            chunks.append(chunk)
            size += len(chunk)
            if size > cap:
                result.reason, result.detail = "too large", f"more than {cap} bytes"
                return result
            if not sniffed and size >= SNIFF_BYTES:
                sniffed = True
                if not self._recognise(result, b"".join(chunks)):
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
