"""Exports of the cleaned dataset."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse, StreamingResponse

from api.deps import DbSession, ProjectAccess, StoreDep
from core import export

router = APIRouter(tags=["exports"])


@router.get("/projects/{project_id}/export/cleaned.csv", response_class=PlainTextResponse)
def cleaned_csv(access: ProjectAccess, session: DbSession) -> PlainTextResponse:
    """fastai's cleaned.csv (`name,label`): verified, labelled, not deleted images."""
    body = export.cleaned_csv(session, access.project.id)
    return PlainTextResponse(
        body,
        media_type="text/csv",
        headers={"Content-Disposition": 'attachment; filename="cleaned.csv"'},
    )


@router.get("/projects/{project_id}/export/imagefolder.zip", response_class=StreamingResponse)
def imagefolder_zip(
    access: ProjectAccess, session: DbSession, store: StoreDep
) -> StreamingResponse:
    """An ImageFolder archive (<class>/<image>.jpg, the normalised copies) with cleaned.csv."""
    spool = tempfile.SpooledTemporaryFile(max_size=64 * 1024**2)  # noqa: SIM115 (closed by the stream)
    export.write_imagefolder_zip(session, access.project.id, store, spool)
    spool.seek(0)

    def chunks() -> Iterator[bytes]:
        try:
            while block := spool.read(1024 * 1024):
                yield block
        finally:
            spool.close()

    name = f"winnow-project-{access.project.id}.zip"
    return StreamingResponse(
        chunks(),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
