"""The verify job end to end: real store, real database, real child processes."""

from __future__ import annotations

import io
import os
import signal
import time
from collections import Counter
from collections.abc import Callable

import billiard
import pytest
from PIL import Image as PILImage
from PIL import PngImagePlugin
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core.config import Settings
from core.db import transaction
from core.decode import DecodeLimits, Reason
from core.ingest import Provenance, add_image, class_by_name
from core.stats import class_stats, duplicate_groups
from core.store import ImageStore, Variant, image_store
from core.tables import EventSource, Image, ImageState, LabelEvent
from tests.core.test_decode import encode, hostile_corpus, photo
from tests.workers.test_dedupe import scene
from workers.runner import JobCancelled, JobContext
from workers.verify.job import verify_job
from workers.verify.streaming import Verifier
from workers.verify.verdict import Verdict, verify_file

MakeContext = Callable[..., JobContext]


def crash_on_marked_png(sha256: str, store: ImageStore, limits: DecodeLimits) -> Verdict:
    """A decoder that segfaults on one file; injected by argument, never in production."""
    if b"crash-me" in store.read(sha256, "raw"):
        os.kill(os.getpid(), signal.SIGSEGV)
    return verify_file(sha256, store, limits)


def slow_verify(sha256: str, store: ImageStore, limits: DecodeLimits) -> Verdict:
    """A decoder slow enough that an abort finds most files still queued."""
    time.sleep(0.05)
    return verify_file(sha256, store, limits)


def ingest(
    factory: sessionmaker[Session], store: ImageStore, project_id: int, files: dict[str, bytes]
) -> dict[str, int]:
    ids = {}
    with transaction(factory) as s:
        for name, data in files.items():
            label = class_by_name(s, project_id, name.split("/")[0], create=True)
            image, _ = add_image(s, store, project_id, data, label.id, Provenance(filename=name))
            ids[name] = image.id
    return ids


def images(factory: sessionmaker[Session]) -> dict[int, Image]:
    with transaction(factory) as s:
        return {im.id: im for im in s.scalars(select(Image))}


def test_every_hostile_file_gets_its_outcome_and_nothing_is_lost(
    settings: Settings, factory: sessionmaker[Session], project_id: int, job_context: MakeContext
) -> None:
    settings.min_image_side = 8
    ctx = job_context("verify")
    corpus = hostile_corpus()
    files = {f"bears/{case.name}": case.data for case in corpus}
    ids = ingest(factory, ctx.store, project_id, files)
    ingest(factory, ctx.store, project_id, {"bears/again.png": files["bears/png-named.jpg"]})

    result = verify_job(ctx, workers=2)

    rows = images(factory)
    for case in corpus:
        image = rows[ids[f"bears/{case.name}"]]
        assert ctx.store.exists(image.sha256, "raw"), case.name
        if case.name == "one-pixel.png":
            assert (image.state, image.reject_reason) == (ImageState.rejected, "too small")
            assert ctx.store.exists(image.sha256, "normal")  # restorable by a reviewer
        elif case.reason is None:
            assert image.state is ImageState.ok, case.name
            assert image.phash and image.width and image.format
            sides: tuple[tuple[Variant, int], ...] = (("normal", 512), ("thumb", 160))
            for variant, side in sides:
                with PILImage.open(io.BytesIO(ctx.store.read(image.sha256, variant))) as derived:
                    assert derived.format == "JPEG" and derived.mode == "RGB"
                    assert max(derived.size) <= side
        else:
            assert image.state is ImageState.rejected, case.name
            assert image.reject_reason in (case.reason, *case.allowed), case.name
    rotated = rows[ids["bears/rotated.jpg"]]
    assert (rotated.width, rotated.height) == (100, 200)

    rejected = sum(1 for im in rows.values() if im.state is ImageState.rejected)
    assert result["verified"] == len(corpus)
    assert result["rejected"] == rejected and result["ok"] == len(corpus) - rejected
    assert result["exact_duplicates"] == 1
    assert result["rejected_by_reason"]["decompression bomb"] == 2
    with transaction(factory) as s:
        events = s.scalars(select(LabelEvent)).all()
    assert len(events) == len(corpus)
    assert {(e.source, e.user_id, e.old_state) for e in events} == {("verify", None, "pending")}
    assert sum(e.action == "reject" for e in events) == rejected

    with transaction(factory) as s:
        (stats,) = class_stats(s, project_id)
    assert (stats.name, stats.total, stats.rejected, stats.exact_duplicates) == (
        "bears",
        len(corpus),
        rejected,
        1,
    )
    assert stats.rejected_by_reason["too small"] == 1


def test_a_decoder_crash_costs_one_image_not_the_job(
    factory: sessionmaker[Session], project_id: int, job_context: MakeContext
) -> None:
    ctx = job_context("verify")
    marked = PngImagePlugin.PngInfo()
    marked.add_text("comment", "crash-me")
    files = {f"bears/{i}.jpg": encode(scene(i), "JPEG") for i in range(6)}
    files["bears/bomb.png"] = encode(photo((64, 64)), "PNG", pnginfo=marked)
    ids = ingest(factory, ctx.store, project_id, files)

    result = verify_job(ctx, process=crash_on_marked_png, workers=2)

    rows = images(factory)
    assert rows[ids["bears/bomb.png"]].reject_reason == Reason.crashed.value
    assert result["rejected_by_reason"] == {"decoder crashed": 1}
    assert result["ok"] == 6


def test_same_photo_under_two_classes_becomes_a_review_item(
    factory: sessionmaker[Session], project_id: int, job_context: MakeContext
) -> None:
    ctx = job_context("verify")
    original = scene(3, (640, 480))
    files = {
        "grizzly/a.jpg": encode(original, "JPEG", quality=92),
        "grizzly/other.jpg": encode(scene(9), "JPEG"),
        "black/copy.jpg": encode(original.resize((300, 225)), "JPEG", quality=60),
    }
    ids = ingest(factory, ctx.store, project_id, files)

    result = verify_job(ctx, workers=1)

    first, copy = ids["grizzly/a.jpg"], ids["black/copy.jpg"]
    assert result["duplicate_groups"] == 1 and result["near_duplicates"] == 1
    assert [g["image_ids"] for g in result["cross_class_groups"]] == [[first, copy]]
    assert images(factory)[copy].duplicate_of_id == first
    with transaction(factory) as s:
        (group,) = duplicate_groups(s, project_id)
        stats = {row.name: row for row in class_stats(s, project_id)}
    assert group.cross_class and [m.image_id for m in group.members] == [first, copy]
    assert stats["grizzly"].cross_class_duplicates == 1
    assert stats["black"].cross_class_duplicates == 1 and stats["black"].near_duplicates == 1


def test_recheck_keeps_a_reviewer_restore(
    settings: Settings, factory: sessionmaker[Session], project_id: int, job_context: MakeContext
) -> None:
    files = {
        "bears/small.png": encode(photo((20, 20)), "PNG"),
        "bears/fine.jpg": encode(scene(1), "JPEG"),
    }
    ids = ingest(factory, image_store(settings), project_id, files)
    verify_job(job_context("verify"), workers=1)
    small = ids["bears/small.png"]
    with transaction(factory) as s:
        image = s.get_one(Image, small)
        assert image.state is ImageState.rejected
        s.add(
            LabelEvent(
                project_id=project_id,
                image_id=small,
                action="restore",
                old_state="rejected",
                new_state="ok",
                source=EventSource.ui,
            )
        )
        image.state = ImageState.ok

    result = verify_job(job_context("verify", {"recheck": True}), workers=1)

    assert result["verified"] == 2 and result["kept_by_reviewer"] == 1
    assert images(factory)[small].state is ImageState.ok
    with transaction(factory) as s:
        assert len(s.scalars(select(LabelEvent)).all()) == 3  # two verdicts, one restore


class CancelledAfter(JobContext):
    """A context whose user presses cancel after a few progress reports."""

    reports_left: int = 3

    def report(self, done: int, total: int, message: str = "", force: bool = False) -> None:
        self.reports_left -= 1
        if self.reports_left < 0:
            raise JobCancelled()


def test_cancel_stops_the_children_and_keeps_what_was_verified(
    settings: Settings, factory: sessionmaker[Session], project_id: int, job_context: MakeContext
) -> None:
    plain = job_context("verify")
    files = {f"bears/{i}.jpg": encode(scene(i, (96, 72)), "JPEG") for i in range(12)}
    ingest(factory, plain.store, project_id, files)
    ctx = CancelledAfter(plain.job_id, project_id, {}, settings, plain.store, factory)

    with pytest.raises(JobCancelled):
        verify_job(ctx, workers=2)

    assert billiard.active_children() == []
    states = Counter(image.state for image in images(factory).values())
    assert states[ImageState.ok] == 3 and states[ImageState.pending] == 9
    with transaction(factory) as s:
        assert len(s.scalars(select(LabelEvent)).all()) == 3


def test_verifier_decodes_images_as_they_are_submitted(
    factory: sessionmaker[Session], project_id: int, job_context: MakeContext
) -> None:
    ctx = job_context("import_urls", {"items": [{"url": "http://x.test/1.jpg", "label": "a"}]})
    first = {f"bears/{i}.jpg": encode(scene(i, (96, 72)), "JPEG") for i in range(4)}
    later = {"bears/cut.png": encode(photo((120, 90)), "PNG")[:300], **first}
    verifier = Verifier(ctx, workers=2)
    ids = ingest(factory, ctx.store, project_id, first)
    verifier.submit((image.sha256, image.id) for image in images(factory).values())
    # A second batch arrives while the first is being decoded; repeats are decoded once.
    ids |= ingest(factory, ctx.store, project_id, later)
    verifier.submit((image.sha256, image.id) for image in images(factory).values())
    progress: list[tuple[int, int]] = []
    summary = verifier.close(lambda done, submitted: progress.append((done, submitted)))

    assert (summary["verified"], summary["ok"], summary["rejected_by_reason"]) == (
        5,
        4,
        {"truncated": 1},
    )
    assert all(done <= submitted == 5 for done, submitted in progress)
    stored = images(factory)
    assert stored[ids["bears/cut.png"]].reject_reason == "truncated"
    assert all(stored[ids[name]].state is ImageState.ok for name in first)
    assert billiard.active_children() == []


def test_an_aborted_verifier_leaves_the_rest_pending(
    factory: sessionmaker[Session], project_id: int, job_context: MakeContext
) -> None:
    ctx = job_context("import_urls", {"items": [{"url": "http://x.test/1.jpg", "label": "a"}]})
    files = {f"bears/{i}.jpg": encode(scene(i, (96, 72)), "JPEG") for i in range(40)}
    ingest(factory, ctx.store, project_id, files)
    verifier = Verifier(ctx, process=slow_verify, workers=1)
    verifier.submit((image.sha256, image.id) for image in images(factory).values())
    verifier.abort()

    states = Counter(image.state for image in images(factory).values())
    # Only what the child had in hand when the import stopped was decoded and recorded.
    assert (
        states[ImageState.pending] >= 30
        and states[ImageState.ok] == 40 - states[ImageState.pending]
    )
    assert billiard.active_children() == []
    # Nothing is lost: the verify job takes the rest.
    result = verify_job(job_context("verify"), workers=1)
    assert result["verified"] == states[ImageState.pending]
    assert all(image.state is ImageState.ok for image in images(factory).values())


def test_a_verify_job_can_hold_images_to_a_minimum_size(
    factory: sessionmaker[Session], project_id: int, job_context: MakeContext
) -> None:
    plain = job_context("verify")
    files = {"bears/small.jpg": encode(scene(1, (96, 72)), "JPEG")}
    files["bears/large.jpg"] = encode(scene(2, (200, 150)), "JPEG")
    ids = ingest(factory, plain.store, project_id, files)
    result = verify_job(job_context("verify", {"min_width": 150}), workers=1)

    assert result["rejected_by_reason"] == {"too small": 1}
    stored = images(factory)
    assert stored[ids["bears/small.jpg"]].reject_reason == "too small"
    assert stored[ids["bears/large.jpg"]].state is ImageState.ok
    # Its normalised copy is there: a reviewer can still restore it.
    assert plain.store.exists(stored[ids["bears/small.jpg"]].sha256, "normal")
