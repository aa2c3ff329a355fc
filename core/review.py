"""Cleaning as a team: a shared review queue of leases, blind second opinions, progress.

The queue hands each reviewer the highest-ranked images nobody else holds. A lease is a row
keyed by the image: inserting it is how a reviewer takes an image, and the primary key is
what stops two reviewers taking the same one, on SQLite and Postgres alike (an insert that
finds the key taken does nothing). Leases end when their holder asks for the next batch or
leaves, or when `expires_at` passes without activity; an expired lease is free for anyone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Select, and_, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from core.columns import utcnow
from core.images import HUMAN_SOURCES
from core.review_rank import latest_scored_model, stored_order_holds
from core.tables import Image, ImageScore, ImageState, LabelAction, LabelEvent
from core.team_tables import OpinionState, ReviewLease, SecondOpinion

# Label events that are a person's decision about an image (not the verifier's, not undo).
PEOPLE = HUMAN_SOURCES
DECISIONS = (LabelAction.relabel, LabelAction.delete, LabelAction.keep, LabelAction.restore)


class NotAllowed(Exception):
    """The call makes no sense for this opinion or this person (said in words)."""


def decided() -> Select[int]:
    """Images a person has decided about: they leave the first-review queue."""
    return select(LabelEvent.image_id).where(
        LabelEvent.image_id == Image.id,
        LabelEvent.source.in_(PEOPLE),
        LabelEvent.action.in_(DECISIONS),
    )


def _take(
    session: Session,
    project_id: int,
    user_id: int,
    rows: list[tuple[int, int | None]],
    expires: datetime,
) -> list[int]:
    """Insert leases for (image, opinion) pairs; those someone else took meanwhile are skipped."""
    if not rows:
        return []
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    now = utcnow()
    stmt = (
        insert(ReviewLease)
        .values(
            [
                {
                    "image_id": image_id,
                    "project_id": project_id,
                    "user_id": user_id,
                    "opinion_id": opinion_id,
                    "leased_at": now,
                    "expires_at": expires,
                }
                for image_id, opinion_id in rows
            ]
        )
        .on_conflict_do_nothing(index_elements=["image_id"])
        .returning(ReviewLease.image_id)
    )
    return list(session.scalars(stmt))


def _first_review_candidates(
    session: Session, project_id: int, label_id: int | None, skip: Sequence[int], limit: int
) -> list[tuple[int, int | None]]:
    """The highest-ranked undecided images of the project that no lease holds."""
    scored = latest_scored_model(session, project_id)
    model_id, method = scored if scored else (-1, "in_sample")
    stmt = (
        select(Image.id)
        .outerjoin(ReviewLease, ReviewLease.image_id == Image.id)
        .where(
            Image.project_id == project_id,
            Image.state == ImageState.ok,
            ReviewLease.image_id.is_(None),
            ~decided().exists(),
        )
        .limit(limit)
    )
    # The review queue's order: the most likely wrong labels first, unscored last; read from
    # the stored order (one index range) when it holds this ranking, as it does after a rank
    # job, else sorted from the scores.
    if stored_order_holds(session, project_id, model_id, method):
        stmt = stmt.order_by(Image.review_rank.asc().nulls_last(), Image.id)
    else:
        stmt = stmt.outerjoin(
            ImageScore,
            and_(
                ImageScore.image_id == Image.id,
                ImageScore.model_version_id == model_id,
                ImageScore.method == method,
            ),
        ).order_by(ImageScore.loss.is_(None), ImageScore.loss.desc(), Image.id)
    if label_id is not None:
        stmt = stmt.where(Image.label_id == label_id)
    if skip:
        stmt = stmt.where(Image.id.not_in(skip))
    return [(image_id, None) for image_id in session.scalars(stmt)]


def _opinion_candidates(
    session: Session, project_id: int, user_id: int, skip: Sequence[int], limit: int
) -> list[tuple[int, int | None]]:
    """Open second-opinion requests on decisions of other people, oldest first."""
    stmt = (
        select(SecondOpinion.image_id, SecondOpinion.id)
        .outerjoin(ReviewLease, ReviewLease.image_id == SecondOpinion.image_id)
        .where(
            SecondOpinion.project_id == project_id,
            SecondOpinion.state == OpinionState.open,
            SecondOpinion.first_user_id.is_distinct_from(user_id),
            ReviewLease.image_id.is_(None),
        )
        .order_by(SecondOpinion.id)
        .limit(limit)
    )
    if skip:
        stmt = stmt.where(SecondOpinion.image_id.not_in(skip))
    seen: set[int] = set()
    rows: list[tuple[int, int | None]] = []
    for image_id, opinion_id in session.execute(stmt):
        if image_id not in seen:  # one request per image at a time
            seen.add(image_id)
            rows.append((image_id, opinion_id))
    return rows


@dataclass
class Batch:
    expires_at: datetime
    image_ids: list[int]
    # image id -> the second-opinion request it was handed for (blind batches only)
    opinions: dict[int, int] = field(default_factory=dict)


def release_expired(session: Session, project_id: int, now: datetime | None = None) -> None:
    session.execute(
        delete(ReviewLease).where(
            ReviewLease.project_id == project_id, ReviewLease.expires_at <= (now or utcnow())
        )
    )


def next_batch(
    session: Session,
    project_id: int,
    user_id: int,
    size: int,
    ttl: float,
    label_id: int | None = None,
    second_opinion: bool = False,
) -> Batch:
    """Release the caller's batch and hand them the next one: images nobody else holds."""
    now = utcnow()
    expires = now + timedelta(seconds=ttl)
    # A write first: on SQLite it takes the write lock, so batches are handed out one at a
    # time; on Postgres the lease's primary key settles any race below.
    release_expired(session, project_id, now)
    previous = list(
        session.scalars(
            delete(ReviewLease)
            .where(ReviewLease.project_id == project_id, ReviewLease.user_id == user_id)
            .returning(ReviewLease.image_id)
        )
    )
    taken: list[int] = []
    opinions: dict[int, int] = {}
    # The images just handed back go to others first; the holder sees them again only when
    # nothing else is left.
    for skip in (previous, []):
        while len(taken) < size:
            want = size - len(taken)
            exclude = [*skip, *taken]
            rows = (
                _opinion_candidates(session, project_id, user_id, exclude, want)
                if second_opinion
                else _first_review_candidates(session, project_id, label_id, exclude, want)
            )
            if not rows:
                break
            got = set(_take(session, project_id, user_id, rows, expires))
            taken += [image_id for image_id, _ in rows if image_id in got]
            opinions |= {i: o for i, o in rows if i in got and o is not None}
        if taken:
            break
    return Batch(expires_at=expires, image_ids=taken, opinions=opinions)


def held(session: Session, project_id: int, user_id: int) -> Batch:
    """The caller's current, unexpired leases."""
    rows = session.execute(
        select(ReviewLease.image_id, ReviewLease.opinion_id, ReviewLease.expires_at)
        .where(
            ReviewLease.project_id == project_id,
            ReviewLease.user_id == user_id,
            ReviewLease.expires_at > utcnow(),
        )
        .order_by(ReviewLease.leased_at, ReviewLease.image_id)
    )
    batch = Batch(expires_at=utcnow(), image_ids=[])
    for image_id, opinion_id, expires_at in rows:
        batch.image_ids.append(image_id)
        batch.expires_at = max(batch.expires_at, expires_at)
        if opinion_id is not None:
            batch.opinions[image_id] = opinion_id
    return batch


def renew(session: Session, project_id: int, user_id: int, ttl: float) -> datetime:
    """The holder is active: their leases run `ttl` seconds from now."""
    expires = utcnow() + timedelta(seconds=ttl)
    session.execute(
        update(ReviewLease)
        .where(
            ReviewLease.project_id == project_id,
            ReviewLease.user_id == user_id,
            ReviewLease.expires_at > utcnow(),
        )
        .values(expires_at=expires)
    )
    return expires


def release(session: Session, project_id: int, user_id: int) -> None:
    session.execute(
        delete(ReviewLease).where(
            ReviewLease.project_id == project_id, ReviewLease.user_id == user_id
        )
    )


# Second opinions


def _latest_decisions(session: Session, project_id: int) -> Select[LabelEvent]:
    newest = (
        select(func.max(LabelEvent.id))
        .where(
            LabelEvent.project_id == project_id,
            LabelEvent.source.in_(PEOPLE),
            LabelEvent.action.in_((LabelAction.relabel, LabelAction.delete, LabelAction.keep)),
        )
        .group_by(LabelEvent.image_id)
        .scalar_subquery()
    )
    return select(LabelEvent).where(LabelEvent.id.in_(newest))


def request_opinions(
    session: Session,
    project_id: int,
    requested_by: int,
    image_ids: Sequence[int] | None = None,
    top_relabels: int | None = None,
) -> int:
    """Ask for a blind second opinion on the latest decision about each image.

    ``top_relabels`` picks the relabels of the highest-ranked images (those the model was
    surest were wrong: where a reviewer's relabel matters most). Decisions already under
    check are skipped; the count of new requests is returned.
    """
    stmt = _latest_decisions(session, project_id)
    if image_ids is not None:
        stmt = stmt.where(LabelEvent.image_id.in_(image_ids))
    if top_relabels is not None:
        scored = latest_scored_model(session, project_id)
        model_id, method = scored if scored else (-1, "in_sample")
        stmt = (
            stmt.where(LabelEvent.action == LabelAction.relabel)
            .outerjoin(
                ImageScore,
                and_(
                    ImageScore.image_id == LabelEvent.image_id,
                    ImageScore.model_version_id == model_id,
                    ImageScore.method == method,
                ),
            )
            .order_by(ImageScore.loss.is_(None), ImageScore.loss.desc(), LabelEvent.id)
            .limit(top_relabels)
        )
    already = set(
        session.scalars(
            select(SecondOpinion.event_id).where(SecondOpinion.project_id == project_id)
        )
    )
    created = 0
    for event in session.scalars(stmt):
        if event.id in already:
            continue
        session.add(
            SecondOpinion(
                project_id=project_id,
                image_id=event.image_id,
                event_id=event.id,
                first_user_id=event.user_id,
                first_label_id=event.new_label_id,
                first_deleted=event.new_state == ImageState.deleted.value,
                requested_by=requested_by,
            )
        )
        created += 1
    session.flush()
    return created


def answer_opinion(
    session: Session,
    project_id: int,
    opinion_id: int,
    user_id: int,
    label_id: int | None,
    deleted: bool,
) -> SecondOpinion:
    """Record the second person's blind answer; it changes nothing about the image."""
    opinion = session.get(SecondOpinion, opinion_id)
    if opinion is None or opinion.project_id != project_id:
        raise LookupError(f"second opinion {opinion_id} not found")
    if opinion.state is not OpinionState.open:
        raise NotAllowed(f"second opinion {opinion_id} was already given")
    if opinion.first_user_id == user_id:
        raise NotAllowed("a second opinion comes from someone else than the first decision")
    if not deleted and label_id is None:
        raise NotAllowed("give a class, or delete")
    opinion.second_user_id = user_id
    opinion.second_label_id = None if deleted else label_id
    opinion.second_deleted = deleted
    opinion.answered_at = utcnow()
    same = deleted == opinion.first_deleted and (deleted or label_id == opinion.first_label_id)
    opinion.state = OpinionState.agreed if same else OpinionState.disagreed
    session.execute(
        delete(ReviewLease).where(
            ReviewLease.image_id == opinion.image_id, ReviewLease.user_id == user_id
        )
    )
    return opinion
