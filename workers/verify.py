"""Verification: any file in, a clean dataset out, nothing lost.

Each image is decoded once in an isolated child process, which writes the normalised copy
and the thumbnail to the store and returns a small verdict. The parent only writes verdicts
to the database, in batches, and records a label event for every state it changes.
Near-duplicates are grouped at the end.

Imports verify what they bring in while they run (``Verifier``); the verify job takes every
pending image (every non-deleted one with ``recheck``): what an import left pending, or a
recheck after the limits changed.
"""

from __future__ import annotations

import io
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from PIL import Image as PILImage
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from api.config import Settings
from api.models import Image, ImageState, Job, LabelEvent
from api.params import VerifyParams
from api.store import ImageStore
from workers.decode import DecodeLimits, Reason, Rejected, decode, shrink
from workers.dedupe import phash, regroup
from workers.isolation import IDLE, DecoderPool, Outcome
from workers.runner import JobContext

BATCH_SIZE = 200
FLUSH_SECONDS = 2.0
CROSS_CLASS_LISTED = 100


@dataclass(frozen=True)
class Verdict:
    sha256: str
    reason: str | None = None
    format: str | None = None
    width: int | None = None
    height: int | None = None
    phash: str | None = None


def limits_from(settings: Settings) -> DecodeLimits:
    return DecodeLimits(
        max_pixels=settings.max_pixels,
        min_side=settings.min_image_side,
        normal_max_side=settings.normal_max_side,
        thumb_max_side=settings.thumb_max_side,
    )


def verify_file(sha256: str, store: ImageStore, limits: DecodeLimits) -> Verdict:
    """Decode one stored file and write its derived variants. Runs in a child process."""
    try:
        data = store.read(sha256, "raw")
    except FileNotFoundError:
        return Verdict(sha256, Reason.missing.value)
    try:
        decoded = decode(data, limits)
    except Rejected as rejected:
        width, height = rejected.size or (None, None)
        return Verdict(sha256, rejected.reason.value, rejected.format, width, height)
    thumb = shrink(decoded.image, limits.thumb_max_side)
    # Written even for images rejected as too small, so that a reviewer can restore them.
    if not store.exists(sha256, "normal"):
        store.put(_jpeg(decoded.image, 90), "normal", sha256=sha256)
    if not store.exists(sha256, "thumb"):
        store.put(_jpeg(thumb, 85), "thumb", sha256=sha256)
    small = min(decoded.width, decoded.height) < limits.min_side
    return Verdict(
        sha256,
        Reason.too_small.value if small else None,
        decoded.format,
        decoded.width,
        decoded.height,
        phash(thumb),
    )


def _jpeg(image: PILImage.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def verify_job(
    ctx: JobContext,
    process: Callable[..., Verdict] = verify_file,
    workers: int | None = None,
) -> dict[str, Any]:
    """Verify the project's images; ``process`` and ``workers`` are for tests and benches."""
    params = VerifyParams.model_validate(ctx.params)
    started = time.monotonic()
    with ctx.session() as s:
        query = select(Image.sha256, Image.id).where(Image.project_id == ctx.project_id)
        if params.recheck:
            query = query.where(Image.state != ImageState.deleted)
        else:
            query = query.where(Image.state == ImageState.pending)
        ids = {sha: image_id for sha, image_id in s.execute(query.order_by(Image.id))}
        reviewed = _reviewed(s, ctx.project_id) if params.recheck else set()
        harvested = _harvest_minimums(s, ctx.project_id, ids)
    total = len(ids)
    ctx.report(0, total, f"verifying {total} images", force=True)
    run = _Run(ctx, ids, reviewed, (params.min_width, params.min_height), harvested)
    run.decode(
        list(ids),
        process,
        workers,
        lambda done: ctx.report(done, total, f"verified {done} of {total}"),
    )
    ctx.report(total, total, "grouping duplicates", force=True)
    summary = run.conclude(params.recheck, started)
    ctx.report(total, total, summary_line(summary), force=True)
    return summary


def _harvest_minimums(
    session: Session, project_id: int, ids: dict[str, int]
) -> dict[str, tuple[int, int]]:
    """sha256 -> (min_width, min_height) of the harvest that brought the image in, where it
    asked for one: a later verify job (a recheck, or the first check of a harvest run with
    verify off) holds the image to it as the harvest itself would have."""
    minimums: dict[int, tuple[int, int]] = {}
    harvests = select(Job.id, Job.params).where(Job.project_id == project_id, Job.kind == "harvest")
    for job_id, params in session.execute(harvests):
        width, height = int(params.get("min_width") or 0), int(params.get("min_height") or 0)
        if width or height:
            minimums[job_id] = (width, height)
    if not minimums:
        return {}
    rows = session.execute(
        select(Image.sha256, Image.harvest_job_id).where(
            Image.project_id == project_id, Image.harvest_job_id.in_(minimums)
        )
    )
    return {sha: minimums[job_id] for sha, job_id in rows if sha in ids and job_id is not None}


def summary_line(summary: dict[str, Any]) -> str:
    return (
        f"{summary['ok']} ok, {summary['rejected']} rejected, "
        f"{summary['duplicate_groups']} duplicate groups"
    )


class Verifier:
    """Verifies images while an import is still bringing them in.

    An import hands over each pending image as soon as it is stored; a thread feeds them
    to a DecoderPool, so decoding overlaps the downloads instead of waiting for a verify
    job after them. What is not verified when the import stops early (cancelled, failed)
    stays pending for the next verify job: nothing is lost either way.
    """

    def __init__(
        self,
        ctx: JobContext,
        process: Callable[..., Verdict] = verify_file,
        workers: int | None = None,
        min_size: tuple[int, int] = (0, 0),
    ) -> None:
        self._run = _Run(ctx, {}, set(), min_size)
        self._feed: queue.Queue[str | None] = queue.Queue()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._started = time.monotonic()
        self._thread = threading.Thread(
            target=self._decode, args=(process, workers), name="verifier", daemon=True
        )
        self._thread.start()

    def submit(self, images: Iterable[tuple[str, int]]) -> None:
        """Queue (sha256, image id) pairs; each file is verified once."""
        for sha256, image_id in images:
            if sha256 not in self._run.ids:
                self._run.ids[sha256] = image_id
                self._feed.put(sha256)

    @property
    def submitted(self) -> int:
        return len(self._run.ids)

    @property
    def verified(self) -> int:
        return self._run.done

    def close(self, on_wait: Callable[[int, int], None] | None = None) -> dict[str, Any]:
        """Wait for everything submitted, group duplicates among the accepted images and
        return the verify summary. ``on_wait(verified, submitted)`` is called about every
        second meanwhile; if it raises (a cancel), the rest is left pending."""
        self._feed.put(None)
        try:
            while self._thread.is_alive():
                self._thread.join(timeout=1.0)
                if on_wait is not None and self._thread.is_alive():
                    on_wait(self.verified, self.submitted)
        except BaseException:
            self.abort()
            raise
        if self._error is not None:
            raise self._error
        return self._run.conclude(False, self._started)

    def abort(self) -> None:
        """Stop after the files being decoded now; their verdicts are still written."""
        self._stop.set()
        self._feed.put(None)
        self._thread.join()

    def _items(self) -> Iterator[str]:
        while not self._stop.is_set():
            try:
                item = self._feed.get(timeout=0.05)
            except queue.Empty:
                yield IDLE
                continue
            if item is None:
                return
            yield item

    def _decode(self, process: Callable[..., Verdict], workers: int | None) -> None:
        try:
            self._run.decode(self._items(), process, workers)
        except BaseException as exc:
            self._error = exc


def verifying_import(
    ctx: JobContext,
    enabled: bool,
    work: Callable[[Verifier | None], dict[str, Any]],
    done: Callable[[dict[str, Any]], str],
    min_size: tuple[int, int] = (0, 0),
) -> dict[str, Any]:
    """Run an import's ``work`` with a Verifier (when ``enabled``); its summary goes into
    the import's result under "verify", and into the last progress message after
    ``done(result)``, the import's own account. Images under ``min_size`` (width, height),
    the import's own minimum, are rejected as too small."""
    if not enabled:
        return work(None)
    verifier = Verifier(ctx, min_size=min_size)
    try:
        result = work(verifier)
    except BaseException:
        verifier.abort()
        raise

    def waiting(verified: int, submitted: int) -> None:
        ctx.report(verified, submitted, f"verifying: {verified} of {submitted}")

    summary = result["verify"] = verifier.close(waiting)
    count = summary["verified"]
    message = f"{done(result)}; verified {count}: {summary_line(summary)}"
    ctx.report(count, count, message, force=True)
    return result


class _Run:
    """One pass of decoding: verdicts written in batches, then duplicates grouped."""

    def __init__(
        self,
        ctx: JobContext,
        ids: dict[str, int],
        reviewed: set[int],
        min_size: tuple[int, int] = (0, 0),
        own_min_sizes: dict[str, tuple[int, int]] | None = None,
    ) -> None:
        self.ctx = ctx
        self.ids = ids  # sha256 -> image id of everything to decode
        self.reviewed = reviewed
        self.min_size = min_size
        self.own_min_sizes = own_min_sizes or {}  # sha256 -> the minimum its harvest set
        self.tally: Counter[str] = Counter()
        self.accepted: list[int] = []
        self.done = 0

    def decode(
        self,
        items: Iterable[str],
        process: Callable[..., Verdict],
        workers: int | None,
        on_verdict: Callable[[int], None] | None = None,
    ) -> None:
        ctx = self.ctx
        limits = limits_from(ctx.settings)
        writer = _Writer(
            partial(
                _write,
                ctx,
                ids=self.ids,
                reviewed=self.reviewed,
                tally=self.tally,
                accepted=self.accepted,
            )
        )
        batch: list[Verdict] = []
        flushed = time.monotonic()
        task = partial(process, store=ctx.store, limits=limits)
        try:
            with DecoderPool(task, workers, limits) as pool:
                for outcome in pool.imap_unordered(items):
                    batch.append(self._judge(_verdict(outcome)))
                    self.done += 1
                    if len(batch) >= BATCH_SIZE or time.monotonic() - flushed > FLUSH_SECONDS:
                        writer.put(batch)
                        batch, flushed = [], time.monotonic()
                    if on_verdict is not None:
                        on_verdict(self.done)
        finally:
            # Verdicts already in hand are kept, also when the job is cancelled.
            writer.close(batch)

    def _judge(self, verdict: Verdict) -> Verdict:
        """The run's minimum size, and the image's own harvest's, on top of the decoder's."""
        min_width, min_height = self.min_size
        own = self.own_min_sizes.get(verdict.sha256)
        if own is not None:
            min_width, min_height = max(min_width, own[0]), max(min_height, own[1])
        width, height = verdict.width, verdict.height
        if verdict.reason is None and width is not None and height is not None:
            small = width < min_width or height < min_height
            return replace(verdict, reason=Reason.too_small.value) if small else verdict
        return verdict

    def conclude(self, recheck: bool, started: float) -> dict[str, Any]:
        ctx, tally = self.ctx, self.tally
        with ctx.session() as s:
            groups = regroup(s, ctx.project_id, None if recheck else self.accepted)
            exact = s.scalar(
                select(func.coalesce(func.sum(Image.seen_count - 1), 0)).where(
                    Image.project_id == ctx.project_id, Image.state != ImageState.deleted
                )
            )
        seconds = time.monotonic() - started
        rejected = {k.removeprefix("rejected:"): v for k, v in tally.items() if k.startswith("rej")}
        total = self.done
        return {
            "verified": total,
            "ok": tally["ok"],
            "rejected": sum(rejected.values()),
            "rejected_by_reason": dict(sorted(rejected.items())),
            "kept_by_reviewer": tally["kept"],
            "exact_duplicates": int(exact or 0),
            "near_duplicates": groups.near_duplicates,
            "duplicate_groups": groups.groups,
            "cross_class_group_count": len(groups.cross_class),
            "cross_class_groups": groups.cross_class[:CROSS_CLASS_LISTED],
            "seconds": round(seconds, 3),
            "images_per_second": round(total / seconds, 1) if seconds > 0 else None,
        }


class _Writer:
    """Writes batches of verdicts in a thread, so that children never wait for the database."""

    def __init__(self, write: Callable[[list[Verdict]], None]) -> None:
        self._write = write
        self._queue: queue.Queue[list[Verdict] | None] = queue.Queue(maxsize=4)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="verify-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (batch := self._queue.get()) is not None:
            if self._error is None and batch:
                try:
                    self._write(batch)
                except BaseException as exc:
                    self._error = exc

    def put(self, batch: list[Verdict]) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(batch)

    def close(self, last: list[Verdict]) -> None:
        self._queue.put(last)
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error


def _verdict(outcome: Outcome[str, Verdict]) -> Verdict:
    if outcome.result is not None:
        return outcome.result
    if outcome.failure is not None:
        return Verdict(outcome.item, outcome.failure.value)
    # Not the image's fault (decode() rejects every bad file): a bug or the store failing.
    raise RuntimeError(f"verifying {outcome.item} failed: {outcome.error}")


def _reviewed(session: Session, project_id: int) -> set[int]:
    """Images whose latest state change was a person's: a recheck keeps their decision."""
    latest = (
        select(func.max(LabelEvent.id))
        .where(LabelEvent.project_id == project_id, LabelEvent.old_state != LabelEvent.new_state)
        .group_by(LabelEvent.image_id)
    )
    rows = session.execute(
        select(LabelEvent.image_id).where(
            LabelEvent.id.in_(latest.scalar_subquery()), LabelEvent.source != "verify"
        )
    )
    return set(rows.scalars())


def _write(
    ctx: JobContext,
    batch: list[Verdict],
    *,
    ids: dict[str, int],
    reviewed: set[int],
    tally: Counter[str],
    accepted: list[int],
) -> None:
    for attempt in range(3):
        try:
            with ctx.session() as s:
                applied = _apply(s, ctx.project_id, batch, ids, reviewed)
            break
        except StaleDataError:
            # Someone changed one of these images between our read and write: read again.
            if attempt == 2:
                raise
    for image_id, key in applied:
        tally[key] += 1
        if key == "ok":
            accepted.append(image_id)


def _apply(
    session: Session,
    project_id: int,
    batch: list[Verdict],
    ids: dict[str, int],
    reviewed: set[int],
) -> list[tuple[int, str]]:
    """Store verdicts; return (image id, tally key) for each. Never commits."""
    wanted = [ids[v.sha256] for v in batch]
    images = {im.id: im for im in session.scalars(select(Image).where(Image.id.in_(wanted)))}
    applied: list[tuple[int, str]] = []
    for verdict in batch:
        image = images.get(ids[verdict.sha256])
        if image is None:
            continue
        image.format = verdict.format
        image.width, image.height, image.phash = verdict.width, verdict.height, verdict.phash
        if image.state is ImageState.deleted or image.id in reviewed:
            applied.append((image.id, "kept"))
            continue
        new = ImageState.rejected if verdict.reason else ImageState.ok
        if image.state is not new:
            session.add(
                LabelEvent(
                    project_id=project_id,
                    image_id=image.id,
                    user_id=None,
                    action="reject" if verdict.reason else "accept",
                    old_label_id=image.label_id,
                    new_label_id=image.label_id,
                    old_state=image.state.value,
                    new_state=new.value,
                    source="verify",
                )
            )
            image.state = new
        image.reject_reason = verdict.reason
        applied.append((image.id, f"rejected:{verdict.reason}" if verdict.reason else "ok"))
    return applied
