"""Images: the review queue, files, cleaning decisions, the audit trail and undo."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Request, status
from fastapi.responses import FileResponse, Response
from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session, aliased
from sqlalchemy.orm.exc import StaleDataError

from api import in_route
from api.deps import (
    MAX_ID,
    DbSession,
    EditorAccess,
    ProjectAccess,
    RowId,
    StoreDep,
    editor,
    project_access,
)
from api.files import store_response
from core import labels
from core.images import ImageFilter, Sort, image_out, list_rows, page_json
from core.ingest import class_by_name
from core.pairs import PairsPage, similar_pairs
from core.schemas import BulkPatch, BulkResult, ImageOut, ImagePage, ImagePatch, LabelEventOut
from core.store import ImageStore, image_key
from core.tables import EventSource, Image, ImageClass, ImageState, LabelAction, LabelEvent, User

router = APIRouter(tags=["images"])


def load_image(session: Session, project_id: int, image_id: int) -> Image:
    image = session.get(Image, image_id)
    if image is None or image.project_id != project_id:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"image {image_id} not found")
    return image


# Built once: a decision's one read before its write is the hottest statement of a cleaning
# session, and building a select with two aliases cost more than running it.
_CURRENT, _WANTED = aliased(ImageClass, name="current_class"), aliased(ImageClass, name="wanted")
_IMAGE_AND_CLASS = (
    select(Image, _CURRENT, _WANTED)
    .outerjoin(_CURRENT, _CURRENT.id == Image.label_id)
    .outerjoin(
        _WANTED, (_WANTED.project_id == Image.project_id) & (_WANTED.name == bindparam("name"))
    )
    .where(Image.id == bindparam("image_id"), Image.project_id == bindparam("project_id"))
)


def image_and_class(
    session: Session, project_id: int, image_id: int, name: str | None
) -> tuple[Image, dict[int, str], int | None]:
    """The image, the names of its class and of the class called ``name`` (by id), and that
    class's id, in one statement."""
    found = session.execute(
        _IMAGE_AND_CLASS, {"name": name or "", "image_id": image_id, "project_id": project_id}
    ).first()
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"image {image_id} not found")
    image, now, new = found
    if name is not None and new is None:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, f"project {project_id} has no class {name!r}"
        )
    names = {c.id: c.name for c in (now, new) if c is not None}
    return image, names, new.id if new is not None else None


def class_id_or_422(session: Session, project_id: int, name: str | None) -> int | None:
    if name is None:
        return None
    try:
        return class_by_name(session, project_id, name).id
    except LookupError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc


@router.get("/projects/{project_id}/images", response_model=ImagePage)
async def get_images(
    project_id: RowId,
    request: Request,
    session: DbSession,
    state: ImageState | None = None,
    label: str | None = Query(default=None, description="Class name; '-' for unlabelled."),
    duplicates: bool = False,
    cross_class: Annotated[
        bool, Query(description="Only duplicates whose copies carry different labels.")
    ] = False,
    reason: Annotated[str | None, Query(description="Only images rejected for this.")] = None,
    query: Annotated[
        str | None, Query(description="Only images a harvest found with this search query.")
    ] = None,
    disagreed: Annotated[
        bool,
        Query(description="Only images whose blind second opinion disagreed, undecided since."),
    ] = False,
    model: int | None = Query(
        default=None, le=MAX_ID, description="Model version whose scores to show."
    ),
    method: Literal["in_sample", "out_of_fold"] | None = None,
    sort: Sort = "id",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> Response:
    """List images; sort=-loss with a ranked model gives the lesson's top losses."""

    def work() -> Response:
        # The access check in the route's own hop to the thread pool: as a dependency it
        # costs a hop of its own, and under load each hop waits for the interpreter lock.
        access = project_access(project_id, request, session)
        pid = access.project.id
        flt = ImageFilter(
            state=state,
            label_id=class_id_or_422(session, pid, label) if label not in (None, "-") else None,
            unlabelled=label == "-",
            model_version_id=model,
            method=method,
            duplicates=duplicates,
            cross_class=cross_class,
            reject_reason=reason,
            query=query,
            disagreed=disagreed,
        )
        total, rows = list_rows(session, pid, flt, sort=sort, limit=limit, offset=offset)
        in_route.commit(session)
        return Response(page_json(total, rows), media_type="application/json")

    return await in_route.interactive(request, work)


@router.get("/projects/{project_id}/similar-pairs", response_model=PairsPage)
def get_similar_pairs(
    access: ProjectAccess,
    session: DbSession,
    cross_class: Annotated[
        bool, Query(description="Only pairs whose two images carry different labels.")
    ] = False,
    settled: Annotated[
        bool, Query(description="Also pairs decided since the ranking (deleted, relabelled).")
    ] = False,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> PairsPage:
    """Near-duplicates by the model's features from the latest rank job, cross-class first:
    one of two labels is wrong, or one photo is in the dataset twice (and may sit on both
    sides of the validation split)."""
    return similar_pairs(session, access.project.id, cross_class, settled, limit, offset)


@router.get("/projects/{project_id}/images/{image_id}", response_model=ImageOut)
def get_image(image_id: RowId, access: ProjectAccess, session: DbSession) -> ImageOut:
    return image_out(session, load_image(session, access.project.id, image_id))


@router.get("/projects/{project_id}/images/{image_id}/file", response_class=FileResponse)
def get_image_file(
    image_id: RowId,
    request: Request,
    access: ProjectAccess,
    session: DbSession,
    store: StoreDep,
    variant: Literal["raw", "normal", "thumb"] = "thumb",
) -> Response:
    """The bytes of an image. Raw downloads are sent as an attachment, never rendered inline.
    The store is content-addressed, so an image's bytes never change: the ETag is its hash,
    and a browser that has them hears 304 without a byte of body."""
    image = load_image(session, access.project.id, image_id)
    etag = f'"{image.sha256[:32]}-{variant}"'
    cache = {"ETag": etag, "Cache-Control": "private, max-age=31536000, immutable"}
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=cache)
    key, missing = image_key(image.sha256, variant), f"no {variant} file for image {image_id}"
    if variant == "raw":
        # The raw bytes are whatever a web server sent: never let a browser sniff them into HTML.
        return store_response(
            store,
            key,
            "application/octet-stream",
            missing,
            filename=image.filename or image.sha256,
            headers={"X-Content-Type-Options": "nosniff", "ETag": etag},
        )
    return store_response(store, key, "image/jpeg", missing, headers=cache)


def _apply(
    session: Session,
    store: ImageStore,
    image: Image,
    action: str,
    label_id: int | None,
    version: int,
    user_id: int,
    source: EventSource,
) -> None:
    labels.apply_change(
        session,
        image,
        labels.Change(action=LabelAction(action), label_id=label_id),
        user_id=user_id,
        source=source,
        expected_version=version,
        # Only a restore asks (a file system or S3 look-up: not on every decision).
        restorable=action != LabelAction.restore or store.exists(image.sha256, "normal"),
    )


@router.patch("/projects/{project_id}/images/{image_id}", response_model=ImageOut)
async def update_image(
    project_id: RowId,
    image_id: RowId,
    body: ImagePatch,
    request: Request,
    session: DbSession,
    store: StoreDep,
    source: Annotated[
        EventSource, Query(description="Who is asking, for the audit trail (ui, api).")
    ] = EventSource.api,
) -> Response:
    """Relabel, delete, restore or keep one image. A stale `version` answers 409."""
    return await in_route.interactive(
        request, _update_image, project_id, image_id, body, request, session, store, source
    )


def _update_image(
    project_id: int,
    image_id: int,
    body: ImagePatch,
    request: Request,
    session: Session,
    store: ImageStore,
    source: EventSource,
) -> Response:
    access = editor(project_access(project_id, request, session))  # one hop, as above
    action = body.action or ("relabel" if body.label is not None else None)
    if action is None:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "give an action or a label")
    image, names, label_id = image_and_class(session, access.project.id, image_id, body.label)
    try:
        _apply(session, store, image, action, label_id, body.version, access.user.id, source)
    except labels.StaleVersion as exc:
        session.rollback()
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            {
                "message": "someone changed this image since you loaded it",
                "image": image_out(session, exc.image, names).model_dump(mode="json"),
            },
        ) from exc
    except StaleDataError as exc:
        session.rollback()
        raise HTTPException(status.HTTP_409_CONFLICT, "concurrent change; reload") from exc
    except labels.InvalidChange as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    out = image_out(session, image, names)
    in_route.commit(session)
    return in_route.as_json(out)


@router.post("/projects/{project_id}/images/bulk", response_model=BulkResult)
def bulk_update(
    body: BulkPatch, access: EditorAccess, session: DbSession, store: StoreDep
) -> BulkResult:
    """Apply one action to many images; stale or impossible ones are reported, the rest applied."""
    pid = access.project.id
    label_id = class_id_or_422(session, pid, body.label)
    if body.action == "relabel" and label_id is None:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "relabel needs a label")
    # Every image in one statement; one that is not this project's fails the whole call.
    wanted = [item.id for item in body.images]
    images = {
        i.id: i
        for i in session.scalars(select(Image).where(Image.project_id == pid, Image.id.in_(wanted)))
    }
    missing = [i for i in wanted if i not in images]
    if missing:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"image {missing[0]} not found")
    names, _users = _lookups(session, pid, users=False)
    changed, conflicts = [], []
    for item in body.images:
        image = images[item.id]
        try:
            with session.begin_nested():
                _apply(
                    session,
                    store,
                    image,
                    body.action,
                    label_id,
                    item.version,
                    access.user.id,
                    EventSource.bulk,
                )
        except (labels.StaleVersion, labels.InvalidChange, StaleDataError):
            session.refresh(image)
            conflicts.append(item.id)
            continue
        changed.append(image)
    session.flush()
    return BulkResult(changed=[image_out(session, i, names) for i in changed], conflicts=conflicts)


def _event_out(event: LabelEvent, names: dict[int, str], users: dict[int, str]) -> LabelEventOut:
    return LabelEventOut(
        id=event.id,
        image_id=event.image_id,
        user=users.get(event.user_id) if event.user_id else None,
        created_at=event.created_at,
        action=event.action,
        old_label=names.get(event.old_label_id) if event.old_label_id else None,
        new_label=names.get(event.new_label_id) if event.new_label_id else None,
        old_state=event.old_state,
        new_state=event.new_state,
        source=event.source,
        reverts_id=event.reverts_id,
    )


def _lookups(
    session: Session, project_id: int, users: bool = True
) -> tuple[dict[int, str], dict[int, str]]:
    """Class names of the project and (with ``users``) user names, by id."""
    names = {
        cid: name
        for cid, name in session.execute(
            select(ImageClass.id, ImageClass.name).where(ImageClass.project_id == project_id)
        )
    }
    if not users:
        return names, {}
    return names, {uid: name for uid, name in session.execute(select(User.id, User.username))}


@router.get("/projects/{project_id}/events", response_model=list[LabelEventOut])
def list_events(
    access: ProjectAccess,
    session: DbSession,
    image_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    user: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before: int | None = Query(
        default=None, le=MAX_ID, description="Events with an id below this (paging)."
    ),
    after: int | None = Query(
        default=None,
        le=MAX_ID,
        description="Only events newer than this id, oldest first (polling).",
    ),
) -> list[LabelEventOut]:
    """The audit trail, newest first (or oldest first from `after`)."""
    stmt = select(LabelEvent).where(LabelEvent.project_id == access.project.id)
    if image_id is not None:
        stmt = stmt.where(LabelEvent.image_id == image_id)
    if user is not None:
        who = aliased(User)
        stmt = stmt.join(who, who.id == LabelEvent.user_id).where(who.username == user)
    if before is not None:
        stmt = stmt.where(LabelEvent.id < before)
    if after is not None:
        stmt = stmt.where(LabelEvent.id > after).order_by(LabelEvent.id)
    else:
        stmt = stmt.order_by(LabelEvent.id.desc())
    events = session.scalars(stmt.limit(limit))
    names, users = _lookups(session, access.project.id)
    return [_event_out(e, names, users) for e in events]


@router.post(
    "/projects/{project_id}/events/{event_id}/undo",
    response_model=LabelEventOut,
    status_code=status.HTTP_201_CREATED,
)
def undo(event_id: RowId, access: EditorAccess, session: DbSession) -> LabelEventOut:
    """Apply the inverse of an event as a new event (the trail keeps both)."""
    event = session.get(LabelEvent, event_id)
    if event is None or event.project_id != access.project.id:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"event {event_id} not found")
    image = load_image(session, access.project.id, event.image_id)
    try:
        new = labels.undo_event(session, event, image, access.user.id)
        session.flush()
    except labels.InvalidChange as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    names, users = _lookups(session, access.project.id)
    return _event_out(new, names, users)
