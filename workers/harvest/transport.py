"""httpx transports of the downloader: the guarded backend under httpx's own connection pools.

httpcore's pool scans every connection it holds for each request it assigns (and asks
each idle socket whether it is readable), so the cost per request grows with the pool:
measured here, 2,000 images over one pool of 64 connections took 12 s against 3.5 s over
pools of 8. The sharded transport spreads hosts over several small pools instead of one
large one; the total stays bounded by shards x connections per shard.
"""

from __future__ import annotations

import math
import zlib

import httpcore
import httpx

from workers.harvest.ssrf import GuardedBackend


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport with the guarded backend under its connection pool.

    Environment proxies are ignored (trust_env=False): a proxy would connect on our behalf
    and the guard would only ever see the proxy's address.
    """

    def __init__(self, backend: GuardedBackend, connections: int) -> None:
        super().__init__(trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=connections,
            max_keepalive_connections=connections,
            network_backend=backend,
        )


class ShardedTransport(httpx.AsyncBaseTransport):
    """Routes each request to one of several transports by a hash of its host and port."""

    def __init__(self, shards: list[httpx.AsyncBaseTransport]) -> None:
        self.shards = shards

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        shard = self.shards[zlib.crc32(request.url.netloc) % len(self.shards)]
        return await shard.handle_async_request(request)

    async def aclose(self) -> None:
        for shard in self.shards:
            await shard.aclose()


def guarded_transport(backend: GuardedBackend, concurrency: int, per_host: int) -> ShardedTransport:
    """One pool per ``per_host`` share of the global concurrency: a host never needs more."""
    shards = max(1, math.ceil(concurrency / per_host))
    return ShardedTransport([GuardedTransport(backend, per_host) for _ in range(shards)])
