"""Writing verdicts: batches in a thread, a label event for every state a verdict changes.

A person's decision wins over the verifier's: images whose latest state change was a
person's keep it on a recheck.
"""

from __future__ import annotations

import queue
import threading
from collections import Counter
from collections.abc import Callable

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from core.labels import record_event
from core.tables import EventSource, Image, ImageState, LabelAction, LabelEvent
from workers.runner import JobContext
from workers.verify.verdict import Verdict


class BatchWriter:
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


def reviewed_images(session: Session, project_id: int) -> set[int]:
    """Images whose latest state change was a person's: a recheck keeps their decision."""
    latest = (
        select(func.max(LabelEvent.id))
        .where(LabelEvent.project_id == project_id, LabelEvent.old_state != LabelEvent.new_state)
        .group_by(LabelEvent.image_id)
    )
    rows = session.execute(
        select(LabelEvent.image_id).where(
            LabelEvent.id.in_(latest.scalar_subquery()), LabelEvent.source != EventSource.verify
        )
    )
    return set(rows.scalars())


def write_verdicts(
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
            action = LabelAction.reject if verdict.reason else LabelAction.accept
            record_event(session, image, action, image.label_id, new, None, EventSource.verify)
        image.reject_reason = verdict.reason
        applied.append((image.id, f"rejected:{verdict.reason}" if verdict.reason else "ok"))
    return applied
