"""Jobs (harvest, import, verify, train, rank...) and the uploads that start imports."""

from __future__ import annotations

import logging
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, HTTPException, Query, UploadFile, status
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.deps import (
    Access,
    DbSession,
    EditorAccess,
    ProjectAccess,
    RowId,
    SettingsDep,
    StoreDep,
)
from api.uploads import save_upload
from core import jobs
from core.columns import utcnow
from core.config import Settings
from core.ingest import Provenance, add_image, class_by_name, class_from_filename, parse_url_list
from core.kinds import JobKindName, JobRequest
from core.params import ImportUrlsParams, ImportZipParams, UrlItem, VerifyParams
from core.schemas import JobOut
from core.tables import Job, JobStatus

router = APIRouter(tags=["jobs"])

log = logging.getLogger(__name__)

MAX_IMAGE_UPLOAD_BYTES = 50 * 1024**2


def start_job(
    session: Session, settings: Settings, access: Access, kind: str, params: dict[str, Any]
) -> Job:
    job = jobs.add_job(session, access.project.id, kind, params, access.user.id)
    # Commit before enqueue, so the worker finds the row whatever the broker's latency.
    session.commit()
    try:
        jobs.queue_job(settings.celery_broker, job)
    except Exception:
        # The row is safe: the workers' watch sends unsent jobs when the broker answers.
        log.warning("the broker refused job %s; it is sent again later", job.id, exc_info=True)
        job.message = "waiting for the queue: the broker did not answer; sent when it does"
    else:
        job.sent_at = utcnow()
    session.commit()
    return job


def load_job(session: Session, project_id: int, job_id: int) -> Job:
    job = session.get(Job, job_id)
    if job is None or job.project_id != project_id:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"job {job_id} not found")
    return job


@router.post(
    "/projects/{project_id}/jobs", response_model=JobOut, status_code=status.HTTP_202_ACCEPTED
)
def create_job(
    body: JobRequest,
    access: EditorAccess,
    session: DbSession,
    settings: SettingsDep,
    store: StoreDep,
) -> Job:
    """Queue a job. Its progress and result are at GET .../jobs/{id}."""
    params = body.params.model_dump(mode="json")
    try:
        jobs.check_references(session, store, access.project.id, params)
    except jobs.ForeignReference as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    return start_job(session, settings, access, body.kind, params)


@router.get("/projects/{project_id}/jobs", response_model=list[JobOut])
def list_jobs(
    access: ProjectAccess,
    session: DbSession,
    kind: str | None = None,
    job_status: Annotated[JobStatus | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[Job]:
    stmt = select(Job).where(Job.project_id == access.project.id)
    if kind:
        stmt = stmt.where(Job.kind == kind)
    if job_status:
        stmt = stmt.where(Job.status == job_status)
    return list(session.scalars(stmt.order_by(Job.id.desc()).limit(limit)))


@router.get("/projects/{project_id}/jobs/{job_id}", response_model=JobOut)
def get_job(job_id: RowId, access: ProjectAccess, session: DbSession) -> Job:
    return load_job(session, access.project.id, job_id)


@router.post("/projects/{project_id}/jobs/{job_id}/cancel", response_model=JobOut)
def cancel_job(job_id: RowId, access: EditorAccess, session: DbSession) -> Job:
    """Cancel a queued job at once, or ask a running one to stop at its next progress report."""
    job = load_job(session, access.project.id, job_id)
    if job.status not in (JobStatus.queued, JobStatus.running):
        raise HTTPException(status.HTTP_409_CONFLICT, f"job {job_id} is already {job.status.value}")
    return jobs.request_cancel(session, job)


@router.post(
    "/projects/{project_id}/imports/zip",
    response_model=JobOut,
    status_code=status.HTTP_202_ACCEPTED,
)
def import_zip(
    access: EditorAccess,
    session: DbSession,
    settings: SettingsDep,
    store: StoreDep,
    file: Annotated[UploadFile, File(description="A zip in ImageFolder layout: <class>/<image>.")],
    label: Annotated[str | None, Form(description="Class for files outside any folder.")] = None,
    verify: Annotated[
        bool, Form(description="Verify the images as they arrive (else a verify job does).")
    ] = True,
) -> Job:
    """Import a zip: each folder name is a class (created when new)."""
    key = f"uploads/{uuid.uuid4().hex}.zip"
    staged = store.staging(key)
    save_upload(file, staged, settings.max_zip_upload_bytes)
    # Into the store before the job exists: the worker that imports it may be another machine.
    store.put_file(key, staged, keep=False)
    params = ImportZipParams(upload=key, label=label, verify=verify)
    return start_job(
        session, settings, access, JobKindName.import_zip, params.model_dump(mode="json")
    )


@router.post(
    "/projects/{project_id}/imports/urls",
    response_model=JobOut,
    status_code=status.HTTP_202_ACCEPTED,
)
def import_url_files(
    access: EditorAccess,
    session: DbSession,
    settings: SettingsDep,
    files: Annotated[list[UploadFile], File(description="fastai urls_<class>.txt files.")],
    label: Annotated[
        str | None, Form(description="Class for every URL (else from file name).")
    ] = None,
    verify: Annotated[
        bool, Form(description="Verify the images as they arrive (else a verify job does).")
    ] = True,
) -> Job:
    """Import URL lists: one URL per line; the class comes from `label` or urls_<class>.txt."""
    items: list[UrlItem] = []
    for upload in files:
        cls = label or class_from_filename(upload.filename or "")
        if not cls:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                f"no class for {upload.filename!r}: name it urls_<class>.txt or send label",
            )
        text = upload.file.read(MAX_IMAGE_UPLOAD_BYTES).decode("utf-8", errors="replace")
        items.extend(UrlItem(url=u, label=cls) for u in parse_url_list(text))
    if not items:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "no URLs in the files")
    params = ImportUrlsParams(items=items, verify=verify)
    return start_job(
        session, settings, access, JobKindName.import_urls, params.model_dump(mode="json")
    )


@router.post("/projects/{project_id}/imports/images", status_code=status.HTTP_201_CREATED)
def upload_images(
    access: EditorAccess,
    session: DbSession,
    settings: SettingsDep,
    store: StoreDep,
    files: Annotated[list[UploadFile], File(description="Image files.")],
    label: Annotated[
        str | None, Form(description="Class of all the files (created if new).")
    ] = None,
    verify: Annotated[
        bool, Form(description="Start a verify job for them (else they stay pending).")
    ] = True,
) -> dict[str, int | None]:
    """Add image files directly. They are pending until decoded by a verify job, which
    starts at once unless ``verify`` is false; its id is ``verify_job_id``."""
    label_id = class_by_name(session, access.project.id, label, create=True).id if label else None
    added = duplicates = 0
    for upload in files:
        data = upload.file.read(MAX_IMAGE_UPLOAD_BYTES + 1)
        if len(data) > MAX_IMAGE_UPLOAD_BYTES:
            raise HTTPException(
                status.HTTP_413_CONTENT_TOO_LARGE, f"{upload.filename} is too large"
            )
        prov = Provenance(source="upload", filename=upload.filename or "")
        _, created = add_image(session, store, access.project.id, data, label_id, prov)
        added += created
        duplicates += not created
    job_id = None
    if verify and added:
        # The images first: a queued job found below then sees them when it starts.
        session.commit()
        job_id = _pending_verify_job(session, access.project.id, settings, access)
    return {"added": added, "duplicates": duplicates, "verify_job_id": job_id}


def _pending_verify_job(
    session: Session, project_id: int, settings: Settings, access: Access
) -> int:
    """A verify job that will see the images just added: one still queued takes every pending
    image when it starts, so uploads in quick succession share it; else a new one."""
    params = VerifyParams().model_dump(mode="json")
    queued = session.scalars(
        select(Job)
        .where(
            Job.project_id == project_id,
            Job.kind == JobKindName.verify,
            Job.status == JobStatus.queued,
        )
        .order_by(Job.id.desc())
    )
    for job in queued:
        if VerifyParams.model_validate(job.params or {}) == VerifyParams():
            return job.id
    return start_job(session, settings, access, JobKindName.verify, params).id
