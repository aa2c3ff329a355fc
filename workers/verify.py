"""The verify job: any file in, a clean dataset out, nothing lost.

Each pending image (every non-deleted one with ``recheck``) is decoded once in an isolated
child process, which writes the normalised copy and the thumbnail to the store and returns
a small verdict. The parent only writes verdicts to the database, in batches, and records a
label event for every state it changes. Near-duplicates are grouped at the end.
"""

from __future__ import annotations

import io
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from PIL import Image as PILImage
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from api.config import Settings
from api.models import Image, ImageState, LabelEvent
from api.params import VerifyParams
from api.store import ImageStore
from workers.decode import DecodeLimits, DecoderPool, Outcome, Reason, Rejected, decode, shrink
from workers.dedupe import phash, regroup
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
    limits = limits_from(ctx.settings)
    started = time.monotonic()
    with ctx.session() as s:
        query = select(Image.sha256, Image.id).where(Image.project_id == ctx.project_id)
        if params.recheck:
            query = query.where(Image.state != ImageState.deleted)
        else:
            query = query.where(Image.state == ImageState.pending)
        ids = {sha: image_id for sha, image_id in s.execute(query.order_by(Image.id))}
        reviewed = _reviewed(s, ctx.project_id) if params.recheck else set()
    total = len(ids)
    ctx.report(0, total, f"verifying {total} images", force=True)

    tally: Counter[str] = Counter()
    accepted: list[int] = []
    writer = _Writer(
        partial(_write, ctx, ids=ids, reviewed=reviewed, tally=tally, accepted=accepted)
    )
    batch: list[Verdict] = []
    flushed = time.monotonic()
    task = partial(process, store=ctx.store, limits=limits)
    try:
        with DecoderPool(task, workers, limits) as pool:
            for done, outcome in enumerate(pool.imap_unordered(list(ids)), start=1):
                batch.append(_verdict(outcome))
                if len(batch) >= BATCH_SIZE or time.monotonic() - flushed > FLUSH_SECONDS:
                    writer.put(batch)
                    batch, flushed = [], time.monotonic()
                ctx.report(done, total, f"verified {done} of {total}")
    finally:
        # Verdicts already in hand are kept, also when the job is cancelled.
        writer.close(batch)

    ctx.report(total, total, "grouping duplicates", force=True)
    with ctx.session() as s:
        groups = regroup(s, ctx.project_id, None if params.recheck else accepted)
        exact = s.scalar(
            select(func.coalesce(func.sum(Image.seen_count - 1), 0)).where(
                Image.project_id == ctx.project_id, Image.state != ImageState.deleted
            )
        )
    seconds = time.monotonic() - started
    rejected = {k.removeprefix("rejected:"): v for k, v in tally.items() if k.startswith("rej")}
    summary = (
        f"{tally['ok']} ok, {sum(rejected.values())} rejected, {groups.groups} duplicate groups"
    )
    ctx.report(total, total, summary, force=True)
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
