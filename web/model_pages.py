"""The pages of one model version: its metrics and interpretation, its live curves while it
trains, its comparison with another version, and trying it on images."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from fastapi import APIRouter, Query, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.deps import MAX_ID, DbSession, PageAccess, RowId, load_version
from core.compare import NotComparable
from core.compare_load import load_comparison
from core.model_version_schemas import ModelDetail
from core.tables import ModelVersion
from web.pages import render

router = APIRouter(include_in_schema=False)


@router.get("/projects/{project_id}/models/{model_id}", response_class=HTMLResponse)
def model_page(
    project_id: RowId, model_id: RowId, request: Request, session: DbSession, access: PageAccess
) -> Response:
    """One model: metrics per epoch, advice, confusion matrix, top losses with heatmaps;
    a menu of the project's other finished versions to compare it with."""
    detail = ModelDetail.full(load_version(session, project_id, model_id))
    return render(
        request,
        "model.html",
        access.user,
        access=access,
        project=access.project,
        model=detail,
        others=[v for v in _others(session, project_id, model_id) if v.files],
    )


@router.get("/projects/{project_id}/models/{model_id}/compare", response_class=HTMLResponse)
def compare_page(
    project_id: RowId,
    model_id: RowId,
    request: Request,
    session: DbSession,
    access: PageAccess,
    other: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
) -> Response:
    """Two versions on the validation images they share (GET .../compare/{other_id} of the
    REST API): the verdict, errors both ways, per class, both confusion matrices, the
    relabelled and left-out images, the predictions fixed and broken."""
    first = load_version(session, project_id, model_id)
    if other is None:  # no version chosen yet: the model page has the menu to choose one
        return RedirectResponse(
            f"/projects/{project_id}/models/{model_id}", status.HTTP_303_SEE_OTHER
        )
    second = load_version(session, project_id, other)
    comparison, problem = None, ""
    if first.id == second.id:
        problem = "Pick another version to compare this one with."
    else:
        try:
            comparison = load_comparison(session, first, second)
        except NotComparable as exc:
            problem = str(exc)
    response = render(
        request,
        "compare.html",
        access.user,
        access=access,
        project=access.project,
        model=first,
        other=second,
        comparison=comparison,
        problem=problem,
    )
    if problem:
        response.status_code = status.HTTP_409_CONFLICT
    return response


@router.get("/projects/{project_id}/models/{model_id}/curves", response_class=HTMLResponse)
def curves_panel(
    project_id: RowId, model_id: RowId, request: Request, session: DbSession, access: PageAccess
) -> Response:
    """A model's epochs and curves; it fetches itself again only while the model trains."""
    detail = ModelDetail.full(load_version(session, project_id, model_id))
    return render(
        request,
        "_curves.html",
        access.user,
        project=access.project,
        model=detail,
        finished_now=bool(request.headers.get("hx-request")) and detail.status != "training",
    )


@router.get("/projects/{project_id}/models/{model_id}/try", response_class=HTMLResponse)
def predict_page(
    project_id: RowId, model_id: RowId, request: Request, session: DbSession, access: PageAccess
) -> Response:
    """The lesson's last step: drop images, see what the model says; beside another
    version of the same project for comparison. Calls the REST predict endpoint."""
    version = load_version(session, project_id, model_id)
    return render(
        request,
        "predict.html",
        access.user,
        access=access,
        project=access.project,
        model=version,
        others=[v for v in _others(session, project_id, model_id) if v.files.get("onnx")],
    )


def _others(session: Session, project_id: int, model_id: int) -> Sequence[ModelVersion]:
    """The project's other versions, newest first."""
    return session.scalars(
        select(ModelVersion)
        .where(ModelVersion.project_id == project_id, ModelVersion.id != model_id)
        .order_by(ModelVersion.id.desc())
    ).all()
