"""The verify job: every pending image of a project (every non-deleted one on a recheck)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.kinds import JobKindName
from core.params import HarvestParams, VerifyParams
from core.tables import Image, ImageState, Job
from workers.runner import JobContext
from workers.verify.streaming import VerifyRun, summary_line
from workers.verify.verdict import Verdict, verify_file
from workers.verify.writer import reviewed_images


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
        reviewed = reviewed_images(s, ctx.project_id) if params.recheck else set()
        harvested = _harvest_minimums(s, ctx.project_id, ids)
    total = len(ids)
    ctx.report(0, total, f"verifying {total} images", force=True)
    run = VerifyRun(ctx, ids, reviewed, (params.min_width, params.min_height), harvested)
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
    harvests = select(Job.id, Job.params).where(
        Job.project_id == project_id, Job.kind == JobKindName.harvest
    )
    for job_id, raw in session.execute(harvests):
        params = HarvestParams.model_validate(raw or {})
        if params.min_width or params.min_height:
            minimums[job_id] = (params.min_width, params.min_height)
    if not minimums:
        return {}
    rows = session.execute(
        select(Image.sha256, Image.harvest_job_id).where(
            Image.project_id == project_id, Image.harvest_job_id.in_(minimums)
        )
    )
    return {sha: minimums[job_id] for sha, job_id in rows if sha in ids and job_id is not None}
