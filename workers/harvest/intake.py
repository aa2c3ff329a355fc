"""Taking candidate image URLs into a project: skip known ones, download, store in batches.

Shared by the search harvest and the URL-list import. Downloads run concurrently in the
event loop; results are stored in short transactions on a worker thread, a batch at a
time, so the database never waits on the network and the network never waits on it. Each
stored batch goes on to a ``Verifier`` at once, so decoding overlaps the downloads.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import PurePosixPath
from urllib.parse import unquote, urlsplit

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.ingest import NewImage, Provenance, add_images
from core.tables import Image, ImageState
from workers.harvest.download import Download, Downloader, FetchLimits
from workers.harvest.ssrf import AddressPolicy
from workers.harvest.tally import Tally
from workers.runner import JobContext
from workers.verify.streaming import Verifier

BATCH = 200
QUEUE_SIZE = 256
# A concurrent job may insert the same file between our SELECT and INSERT; a fresh
# transaction then finds its row and counts a duplicate.
STORE_TRIES = 3


@dataclass
class Candidate:
    url: str
    class_name: str
    label_id: int | None
    provenance: Provenance


def filename_from_url(url: str) -> str:
    try:
        name = PurePosixPath(unquote(urlsplit(url).path)).name
    except ValueError:
        return ""
    return name[:300]


def known_urls(session: Session, project_id: int, urls: Sequence[str]) -> set[str]:
    """The image URLs among ``urls`` that the project already has."""
    found: set[str] = set()
    # Chunked to stay under SQLite's bound-parameter limit.
    for start in range(0, len(urls), 500):
        chunk = urls[start : start + 500]
        rows = session.scalars(
            select(Image.image_url).where(
                Image.project_id == project_id, Image.image_url.in_(chunk)
            )
        )
        found.update(url for url in rows if url)
    return found


@dataclass(frozen=True)
class Stored:
    new: bool  # False: an exact duplicate of an image the project has
    sha256: str
    image_id: int
    pending: bool  # not verified yet


def store_batch(ctx: JobContext, batch: Sequence[tuple[Candidate, Download]]) -> list[Stored]:
    """Add downloaded images in one transaction; say for each what became of it."""
    for attempt in range(1, STORE_TRIES + 1):
        try:
            with ctx.session() as session:
                items = []
                for candidate, download in batch:
                    assert download.data is not None
                    provenance = replace(
                        candidate.provenance,
                        http_status=download.status,
                        content_type=(download.content_type or "")[:100] or None,
                        fetched_at=download.fetched_at,
                        harvest_job_id=ctx.job_id,
                    )
                    items.append(NewImage(download.data, candidate.label_id, provenance))
                stored = [
                    Stored(new, image.sha256, image.id, image.state is ImageState.pending)
                    for image, new in add_images(session, ctx.store, ctx.project_id, items)
                ]
                return stored
        except IntegrityError:
            if attempt == STORE_TRIES:
                raise
    raise AssertionError("unreachable")


async def _take_batch(
    queue: asyncio.Queue[tuple[Candidate, Download]],
) -> list[tuple[Candidate, Download]]:
    try:
        first = await asyncio.wait_for(queue.get(), timeout=0.5)
    except TimeoutError:
        return []
    batch = [first]
    while len(batch) < BATCH and not queue.empty():
        batch.append(queue.get_nowait())
    return batch


async def take_in(
    ctx: JobContext,
    candidates: Sequence[Candidate],
    downloader: Downloader,
    tally: Tally,
    phase: str = "downloading",
    verifier: Verifier | None = None,
) -> None:
    """Download and store ``candidates`` (``tally.found`` is the caller's to count); hand
    each stored image that is still pending to ``verifier`` at once."""
    urls = [c.url for c in candidates]

    def lookup() -> tuple[set[str], list[tuple[str, int]]]:
        with ctx.session() as session:
            # A redelivered job skips what its first run stored; what that run did not get
            # to verify is verified now.
            unverified = session.execute(
                select(Image.sha256, Image.id).where(
                    Image.project_id == ctx.project_id,
                    Image.harvest_job_id == ctx.job_id,
                    Image.state == ImageState.pending,
                )
            )
            return known_urls(session, ctx.project_id, urls), [(s, i) for s, i in unverified]

    known, unverified = await asyncio.to_thread(lookup)
    if verifier is not None:
        verifier.submit(unverified)
    fresh: list[Candidate] = []
    for candidate in candidates:
        if candidate.url in known:
            tally.count(candidate.class_name, "skipped")
        else:
            known.add(candidate.url)
            fresh.append(candidate)

    queue: asyncio.Queue[tuple[Candidate, Download]] = asyncio.Queue(QUEUE_SIZE)
    todo = iter(fresh)

    async def worker() -> None:
        # One shared iterator: workers take the next URL whenever they are free.
        for candidate in todo:
            try:
                download = await downloader.fetch(candidate.url, candidate.provenance.page_url)
            except Exception as exc:
                download = Download(candidate.url, reason="error", detail=repr(exc))
            await queue.put((candidate, download))

    # More workers than slots, so that one slow host's per-host cap does not idle the rest.
    count = min(len(fresh), 2 * downloader.limits.concurrency)
    workers = [asyncio.create_task(worker()) for _ in range(count)]
    remaining = len(fresh)
    try:
        while remaining:
            batch = await _take_batch(queue)
            remaining -= len(batch)
            good = []
            for candidate, download in batch:
                if download.data is None:
                    tally.fail(
                        candidate.url,
                        candidate.class_name,
                        download.reason or "error",
                        download.detail,
                    )
                else:
                    good.append((candidate, download))
            if good:
                stored = await asyncio.to_thread(store_batch, ctx, good)
                for (candidate, _download), item in zip(good, stored, strict=True):
                    tally.count(candidate.class_name, "downloaded" if item.new else "duplicates")
                if verifier is not None:
                    verifier.submit((i.sha256, i.image_id) for i in stored if i.pending)
            message = tally.message(phase, verifier.verified if verifier else None)
            await asyncio.to_thread(ctx.report, tally.processed, tally.found, message)
    finally:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    if verifier is None:
        message = tally.message("done")
    else:
        message = tally.message("downloaded, verifying", verifier.verified)
    await asyncio.to_thread(ctx.report, tally.processed, tally.found, message, True)


def download_all(
    ctx: JobContext,
    candidates: Sequence[Candidate],
    tally: Tally,
    phase: str = "downloading",
    verifier: Verifier | None = None,
) -> None:
    """``take_in`` with a downloader made from the settings, in an event loop of its own."""

    async def run() -> None:
        limits = FetchLimits.from_settings(ctx.settings)
        policy = AddressPolicy.from_setting(ctx.settings.fetch_allow)
        async with Downloader(limits, policy) as downloader:
            await take_in(ctx, candidates, downloader, tally, phase, verifier)

    asyncio.run(run())
