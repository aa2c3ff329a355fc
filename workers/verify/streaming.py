"""Verifying while images arrive: a decoding pass over a stream of stored files.

``VerifyRun`` is one pass (decoder pool, verdicts judged and written in batches,
duplicates grouped at the end); ``Verifier`` feeds it from an import as files are stored.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from functools import partial
from typing import Any

from sqlalchemy import func, select

from core.decode import Reason, decode_limits
from core.isolation import IDLE, DecoderPool
from core.tables import Image, ImageState
from workers.dedupe import regroup
from workers.runner import JobContext
from workers.verify.verdict import Verdict, verdict_of, verify_file
from workers.verify.writer import BatchWriter, write_verdicts

BATCH_SIZE = 200
FLUSH_SECONDS = 2.0
CROSS_CLASS_LISTED = 100


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
        self._run = VerifyRun(ctx, {}, set(), min_size)
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


class VerifyRun:
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
        limits = decode_limits(ctx.settings)
        writer = BatchWriter(
            partial(
                write_verdicts,
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
                    batch.append(self._judge(verdict_of(outcome)))
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
