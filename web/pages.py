"""Server-rendered pages. They read through the same domain functions as the REST API,
and every action on them is a call to the documented REST API (see static/app.js)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.deps import (
    MAX_ID,
    Access,
    DbSession,
    LoginRequired,
    PageAccess,
    RowId,
    SettingsDep,
    optional_user,
    password_login,
    start_session,
)
from core import projects, review, team_progress
from core.images import ImageFilter, Sort, filter_choices, list_images
from core.kinds import KINDS, JobKindName
from core.pairs import similar_pairs
from core.query_stats import query_quality
from core.review_rank import latest_scored_model
from core.schemas import ImageOut
from core.security import SESSION_COOKIE, SessionSigner
from core.stats import class_stats
from core.tables import ApiToken, ImageState, Job, JobStatus, ModelVersion, Role, User
from web.forms import job_forms

TEMPLATES = Jinja2Templates(directory=Path(__file__).resolve().parent / "templates")
router = APIRouter(include_in_schema=False)

STATES = {s.value for s in ImageState}
REVIEW_PAGE = 100  # tiles per review page
PAIRS_PAGE = 50  # near-duplicate pairs per page
SORTS: tuple[Sort, ...] = ("-loss", "loss", "id", "-id")

PageUser = Annotated[User | None, Depends(optional_user)]


def render(request: Request, name: str, user: User | None, **context: Any) -> HTMLResponse:
    signer: SessionSigner = request.app.state.signer
    cookie = request.cookies.get(SESSION_COOKIE, "")
    return TEMPLATES.TemplateResponse(
        request,
        name,
        {"user": user, "csrf": signer.csrf_token(cookie) if cookie else "", **context},
    )


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str = "/", error: str = "") -> HTMLResponse:
    return render(request, "login.html", None, next=next, error=error)


def local_target(next: str) -> str:
    """Only a path of this site: an open redirect would let a link send people elsewhere
    after login. Browsers read "\\" as "/" and drop tabs and newlines, so "/\\evil.example"
    and "/<tab>/evil.example" name another site as "//evil.example" does."""
    seen = next.replace("\\", "/")
    if any(ord(c) < 0x20 for c in seen) or not seen.startswith("/") or seen.startswith("//"):
        return "/"
    parts = urlsplit(seen)
    return "/" if parts.scheme or parts.netloc else next


@router.post("/login")
def login_form(
    request: Request,
    session: DbSession,
    username: Annotated[str, Form()],
    password: Annotated[str, Form()],
    next: Annotated[str, Form()] = "/",
) -> Response:
    try:
        user = password_login(request, session, username, password)
    except HTTPException as refused:
        return render(request, "login.html", None, next=next, error=str(refused.detail))
    response = RedirectResponse(local_target(next), status.HTTP_303_SEE_OTHER)
    start_session(request, response, user)
    return response


@router.get("/", response_class=HTMLResponse)
def home(request: Request, session: DbSession, user: PageUser) -> Response:
    if user is None:
        raise LoginRequired()
    rows = [
        (p, role, projects.state_counts(session, p.id))
        for p, role in projects.projects_for(session, user.id, user.is_admin)
    ]
    return render(request, "projects.html", user, rows=rows)


@router.get("/projects/{project_id}", response_class=HTMLResponse)
def project_page(
    project_id: RowId, request: Request, session: DbSession, access: PageAccess
) -> Response:
    models = session.scalars(
        select(ModelVersion)
        .where(ModelVersion.project_id == project_id)
        .order_by(ModelVersion.id.desc())
    ).all()
    # The newest learning-rate sweep is shown in place, with its suggestion marked.
    lr_find = session.scalar(
        select(Job)
        .where(
            Job.project_id == project_id,
            Job.kind == JobKindName.lr_find,
            Job.status == JobStatus.succeeded,
        )
        .order_by(Job.id.desc())
        .limit(1)
    )
    return render(
        request,
        "project.html",
        access.user,
        access=access,
        project=access.project,
        counts=projects.state_counts(session, project_id),
        models=models,
        job_forms=job_forms(),
        lr_find=lr_find,
        balance=[c for c in class_stats(session, project_id) if c.total],
        queries=query_quality(session, project_id),
    )


@router.get("/projects/{project_id}/jobs-panel", response_class=HTMLResponse)
def jobs_panel(
    project_id: RowId, request: Request, session: DbSession, access: PageAccess
) -> Response:
    """The jobs table. It polls itself only while a job is queued or running; a new job
    (the page's winnow:job event) starts the polling again."""
    jobs = session.scalars(
        select(Job).where(Job.project_id == project_id).order_by(Job.id.desc()).limit(20)
    ).all()
    live = [j for j in jobs if j.status in (JobStatus.queued, JobStatus.running)]
    # A model in training shows its curves here, growing with each epoch while the panel polls.
    train_ids = [j.id for j in live if j.kind == JobKindName.train]
    training = (
        session.scalars(
            select(ModelVersion).where(ModelVersion.job_id.in_(train_ids)).order_by(ModelVersion.id)
        ).all()
        if train_ids
        else []
    )
    return render(
        request,
        "_jobs.html",
        access.user,
        project=access.project,
        jobs=jobs,
        access=access,
        active=bool(live),
        training=training,
        kinds=KINDS,
    )


@router.get("/projects/{project_id}/review", response_class=HTMLResponse)
def review_page(
    project_id: RowId,
    request: Request,
    session: DbSession,
    access: PageAccess,
    settings: SettingsDep,
    state: str = "ok",
    label: str = "",
    sort: str = "-loss",
    reason: str = "",
    query: str = "",
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
    mode: Literal["", "queue", "second"] = "",
) -> Response:
    classes = access.project.classes
    label_id = next((c.id for c in classes if c.name == label), None)
    if mode:
        return _team_review(request, session, access, mode, settings.review_lease_seconds)
    flt = ImageFilter(
        label_id=label_id,
        duplicates=state == "duplicates",
        cross_class=state == "cross-class",
        disagreed=state == "disagreed",
        reject_reason=reason or None,
        query=query or None,
    )
    if state in STATES:
        flt.state = ImageState(state)
    sort_key: Sort = "-loss"
    for option in SORTS:
        if sort == option:
            sort_key = option
    total, items = list_images(
        session, project_id, flt, sort=sort_key, limit=REVIEW_PAGE, offset=offset
    )
    scored = latest_scored_model(session, project_id)
    return render(
        request,
        "review.html",
        access.user,
        access=access,
        project=access.project,
        classes=classes,
        items=items,
        total=total,
        offset=offset,
        state=state,
        label=label,
        reason=reason,
        query=query,
        choices=filter_choices(session, project_id),
        page_size=REVIEW_PAGE,
        sort=sort_key,
        scored=scored,
    )


def _team_review(
    request: Request, session: Session, access: Access, mode: str, lease_seconds: float
) -> Response:
    """The shared queue: the batch this person holds (first review, or blind checks)."""
    pid = access.project.id
    held = review.held(session, pid, access.user.id)
    blind = mode == "second"
    if blind != bool(held.opinions):
        held = review.Batch(expires_at=held.expires_at, image_ids=[])
    items: list[ImageOut] = []
    if held.image_ids and not blind:
        _, items = list_images(
            session, pid, ImageFilter(ids=held.image_ids), sort="-loss", limit=len(held.image_ids)
        )
    return render(
        request,
        "team_review.html",
        access.user,
        access=access,
        project=access.project,
        classes=access.project.classes,
        mode=mode,
        items=items,
        blind=[(i, held.opinions[i]) for i in held.image_ids if i in held.opinions],
        expires_at=held.expires_at if held.image_ids else None,
        lease_seconds=lease_seconds,
    )


@router.get("/projects/{project_id}/team", response_class=HTMLResponse)
def team_page(
    project_id: RowId, request: Request, session: DbSession, access: PageAccess
) -> Response:
    """The owner's view of cleaning as a team: progress per person and class, agreement."""
    if access.role is not Role.owner:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "only the project's owners see this")
    return render(
        request,
        "team.html",
        access.user,
        access=access,
        project=access.project,
        progress=team_progress.report(session, project_id),
    )


@router.get("/projects/{project_id}/pairs", response_class=HTMLResponse)
def pairs_page(
    project_id: RowId,
    request: Request,
    session: DbSession,
    access: PageAccess,
    cross_class: bool = False,
    settled: bool = False,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> Response:
    """Near-duplicate pairs of the latest ranking, side by side, cross-class first."""
    found = similar_pairs(session, project_id, cross_class, settled, PAIRS_PAGE, offset)
    return render(
        request,
        "pairs.html",
        access.user,
        access=access,
        project=access.project,
        pairs=found,
        cross_class=cross_class,
        settled=settled,
        offset=offset,
        page_size=PAIRS_PAGE,
    )


@router.get("/projects/{project_id}/history", response_class=HTMLResponse)
def history_page(project_id: RowId, request: Request, access: PageAccess) -> Response:
    return render(request, "history.html", access.user, access=access, project=access.project)


@router.get("/projects/{project_id}/members", response_class=HTMLResponse)
def members_page(
    project_id: RowId, request: Request, session: DbSession, access: PageAccess
) -> Response:
    """Who works on the project; owners invite by user name, change roles, remove."""
    return render(
        request,
        "members.html",
        access.user,
        access=access,
        project=access.project,
        members=projects.members(session, project_id),
        roles=[role.value for role in Role],
    )


@router.get("/tokens", response_class=HTMLResponse)
def tokens_page(request: Request, session: DbSession, user: PageUser) -> Response:
    """The user's personal API tokens: create (shown once), list, revoke."""
    if user is None:
        raise LoginRequired()
    tokens = session.scalars(
        select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.id)
    ).all()
    return render(request, "tokens.html", user, tokens=tokens)


@router.get("/admin/users", response_class=HTMLResponse)
def users_page(request: Request, session: DbSession, user: PageUser) -> Response:
    """Admins: every account; create, disable or enable, make admin, reset a password."""
    if user is None:
        raise LoginRequired()
    if not user.is_admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "admin only")
    accounts = session.scalars(select(User).order_by(User.id)).all()
    return render(request, "users.html", user, accounts=accounts)
