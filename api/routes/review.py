"""Cleaning as a team: the shared review queue, blind second opinions, progress."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Query, status
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.deps import DbSession, EditorAccess, OwnerAccess, RowId, SettingsDep
from api.routes.images import class_id_or_422
from core import review, team_progress
from core.images import ImageFilter, list_images, unresolved_disagreements
from core.review_schemas import (
    AnswerIn,
    BatchIn,
    BatchOut,
    BlindImage,
    LeaseOut,
    OpinionOut,
    OpinionsCreated,
    OpinionsIn,
    ProgressOut,
)
from core.tables import Image
from core.team_tables import OpinionState, SecondOpinion

router = APIRouter(tags=["review"])


def batch_out(session: Session, project_id: int, batch: review.Batch, blind: bool) -> BatchOut:
    out = BatchOut(expires_at=batch.expires_at, second_opinion=blind)
    if not batch.image_ids:
        return out
    if blind:
        sizes = {
            i: (w, h)
            for i, w, h in session.execute(
                select(Image.id, Image.width, Image.height).where(Image.id.in_(batch.image_ids))
            )
        }
        out.blind = [
            BlindImage(id=i, opinion_id=batch.opinions[i], width=sizes[i][0], height=sizes[i][1])
            for i in batch.image_ids
            if i in batch.opinions and i in sizes
        ]
        return out
    flt = ImageFilter(ids=batch.image_ids)
    _, out.items = list_images(session, project_id, flt, sort="-loss", limit=len(batch.image_ids))
    return out


@router.post("/projects/{project_id}/review/batch", response_model=BatchOut)
def next_batch(
    body: BatchIn, access: EditorAccess, session: DbSession, settings: SettingsDep
) -> BatchOut:
    """Hand back your batch and take the next: the highest-ranked images nobody else holds.

    Nobody else is handed these images until you ask for the next batch, leave
    (`POST .../review/release`) or stay idle for `WINNOW_REVIEW_LEASE_SECONDS` (renew with
    `POST .../review/renew`; deciding does not renew). With `second_opinion`, the batch is
    decisions of others to check blind (answer each with `POST .../opinions/{id}/answer`).
    """
    pid = access.project.id
    label_id = class_id_or_422(session, pid, body.label)
    batch = review.next_batch(
        session,
        pid,
        access.user.id,
        body.size,
        settings.review_lease_seconds,
        label_id=label_id,
        second_opinion=body.second_opinion,
    )
    session.flush()
    return batch_out(session, pid, batch, body.second_opinion)


@router.get("/projects/{project_id}/review/batch", response_model=BatchOut)
def current_batch(access: EditorAccess, session: DbSession) -> BatchOut:
    """The images you hold now (after a reload, say)."""
    batch = review.held(session, access.project.id, access.user.id)
    return batch_out(session, access.project.id, batch, bool(batch.opinions))


@router.post("/projects/{project_id}/review/renew", response_model=LeaseOut)
def renew(access: EditorAccess, session: DbSession, settings: SettingsDep) -> LeaseOut:
    """You are still at it: your batch stays yours for another lease period."""
    expires = review.renew(
        session, access.project.id, access.user.id, settings.review_lease_seconds
    )
    held = review.held(session, access.project.id, access.user.id)
    return LeaseOut(expires_at=expires, held=len(held.image_ids))


@router.post("/projects/{project_id}/review/release", status_code=status.HTTP_204_NO_CONTENT)
def release(access: EditorAccess, session: DbSession) -> None:
    """Leave the queue: your batch goes back to the others at once."""
    review.release(session, access.project.id, access.user.id)


def _opinion_out(o: SecondOpinion, classes: dict[int, str], users: dict[int, str]) -> OpinionOut:
    def said(deleted: bool, label_id: int | None) -> str:
        return "delete" if deleted else classes.get(label_id or 0, "(no class)")

    answered = o.state is not OpinionState.open
    return OpinionOut(
        id=o.id,
        image_id=o.image_id,
        state=o.state.value,
        first_user=users.get(o.first_user_id or 0),
        first=said(o.first_deleted, o.first_label_id),
        second_user=users.get(o.second_user_id or 0) if answered else None,
        second=said(o.second_deleted, o.second_label_id) if answered else None,
        answered_at=o.answered_at,
    )


@router.post(
    "/projects/{project_id}/review/opinions",
    response_model=OpinionsCreated,
    status_code=status.HTTP_201_CREATED,
)
def request_opinions(body: OpinionsIn, access: EditorAccess, session: DbSession) -> OpinionsCreated:
    """Send decisions to a blind second opinion: given images, or the top-ranked relabels."""
    created = review.request_opinions(
        session, access.project.id, access.user.id, body.image_ids, body.top_relabels
    )
    return OpinionsCreated(created=created)


@router.get("/projects/{project_id}/review/opinions", response_model=list[OpinionOut])
def list_opinions(
    access: OwnerAccess,
    session: DbSession,
    state: OpinionState | None = None,
    unresolved: bool = Query(
        default=False, description="Only disagreements nobody has decided about since."
    ),
) -> list[OpinionOut]:
    """Second opinions with both answers (the owner's view; a reviewer answers blind)."""
    pid = access.project.id
    stmt = select(SecondOpinion).where(SecondOpinion.project_id == pid)
    if state is not None:
        stmt = stmt.where(SecondOpinion.state == state)
    if unresolved:
        stmt = stmt.where(
            SecondOpinion.state == OpinionState.disagreed,
            SecondOpinion.image_id.in_(unresolved_disagreements(pid)),
        )
    classes, users = team_progress.names(session, pid)
    return [
        _opinion_out(o, classes, users) for o in session.scalars(stmt.order_by(SecondOpinion.id))
    ]


@router.post(
    "/projects/{project_id}/review/opinions/{opinion_id}/answer", response_model=OpinionOut
)
def answer(
    opinion_id: RowId, body: AnswerIn, access: EditorAccess, session: DbSession
) -> OpinionOut:
    """Your blind answer: agreement or disagreement with the first decision is recorded;
    the image itself does not change (disagreements go to the owner's review list)."""
    pid = access.project.id
    label_id = None if body.delete else class_id_or_422(session, pid, body.label)
    try:
        opinion = review.answer_opinion(
            session, pid, opinion_id, access.user.id, label_id, body.delete
        )
    except LookupError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    except review.NotAllowed as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    session.flush()
    classes, users = team_progress.names(session, pid)
    return _opinion_out(opinion, classes, users)


@router.get("/projects/{project_id}/review/progress", response_model=ProgressOut)
def progress(access: OwnerAccess, session: DbSession) -> ProgressOut:
    """Decisions per person and per class, who holds what now, and second-opinion agreement."""
    return team_progress.report(session, access.project.id)
