"""Cleaning as a team: a shared review queue of leases, blind second opinions, progress.

The queue hands each reviewer the highest-ranked images nobody else holds. A lease is a row
keyed by the image: inserting it is how a reviewer takes an image, and the primary key is
what stops two reviewers taking the same one, on SQLite and Postgres alike (an insert that
finds the key taken does nothing). Leases end when their holder asks for the next batch or
leaves, or when `expires_at` passes without activity; an expired lease is free for anyone.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Select, and_, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from core.images import HUMAN_SOURCES, latest_scored_model, unresolved_disagreements
from core.review_schemas import ClassProgress, PersonProgress, ProgressOut, TallyOut
from core.tables import (
    Image,
    ImageClass,
    ImageScore,
    ImageState,
    LabelAction,
    LabelEvent,
    OpinionState,
    ReviewLease,
    SecondOpinion,
    User,
    utcnow,
)

# Label events that are a person's decision about an image (not the verifier's, not undo).
PEOPLE = HUMAN_SOURCES
DECISIONS = (LabelAction.relabel, LabelAction.delete, LabelAction.keep, LabelAction.restore)


class NotAllowed(Exception):
    """The call makes no sense for this opinion or this person (said in words)."""


def _decided() -> Select[int]:
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
        .outerjoin(
            ImageScore,
            and_(
                ImageScore.image_id == Image.id,
                ImageScore.model_version_id == model_id,
                ImageScore.method == method,
            ),
        )
        .outerjoin(ReviewLease, ReviewLease.image_id == Image.id)
        .where(
            Image.project_id == project_id,
            Image.state == ImageState.ok,
            ReviewLease.image_id.is_(None),
            ~_decided().exists(),
        )
        # The review queue's order: the most likely wrong labels first, unscored last.
        .order_by(ImageScore.loss.is_(None), ImageScore.loss.desc(), Image.id)
        .limit(limit)
    )
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
    for image_id, opinion_id in session.execute(stmt).tuples():
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
    ).tuples()
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


# Progress


@dataclass
class Tally:
    decisions: int = 0
    images: int = 0
    relabelled: int = 0
    deleted: int = 0
    kept: int = 0
    restored: int = 0


@dataclass
class Agreement:
    checked: int = 0  # this person's decisions that a second opinion has answered
    agreed: int = 0
    given: int = 0  # second opinions this person gave


@dataclass
class Progress:
    by_user: dict[int | None, Tally]
    by_class: dict[int | None, Tally]
    total: Tally
    queue_left: int  # verified images nobody has decided about yet
    leases: dict[int, int]  # user id -> images held now
    agreement: dict[int | None, Agreement]
    open_opinions: int
    disagreements: int


_COUNTED = {
    LabelAction.relabel: "relabelled",
    LabelAction.delete: "deleted",
    LabelAction.keep: "kept",
    LabelAction.restore: "restored",
}


def progress(session: Session, project_id: int) -> Progress:
    """Decisions per person and per class (the class the image had when decided)."""
    rows = session.execute(
        select(
            LabelEvent.user_id, LabelEvent.old_label_id, LabelEvent.action, LabelEvent.image_id
        ).where(
            LabelEvent.project_id == project_id,
            LabelEvent.source.in_(PEOPLE),
            LabelEvent.action.in_(DECISIONS),
        )
    ).tuples()
    by_user: dict[int | None, Tally] = defaultdict(Tally)
    by_class: dict[int | None, Tally] = defaultdict(Tally)
    total = Tally()
    images: dict[str, set[tuple[int | None, int]]] = defaultdict(set)
    for user_id, label_id, action, image_id in rows:
        for key, tally in (("u", by_user[user_id]), ("c", by_class[label_id]), ("t", total)):
            tally.decisions += 1
            name = _COUNTED[action]
            setattr(tally, name, getattr(tally, name) + 1)
            images[key].add((user_id if key == "u" else label_id if key == "c" else 0, image_id))
    for key, tallies in (("u", by_user), ("c", by_class)):
        counts = Counter(owner for owner, _ in images[key])
        for owner, tally in tallies.items():
            tally.images = counts[owner]
    total.images = len({image_id for _, image_id in images["t"]})
    left = session.scalar(
        select(func.count(Image.id)).where(
            Image.project_id == project_id, Image.state == ImageState.ok, ~_decided().exists()
        )
    )
    leases = {
        user_id: count
        for user_id, count in session.execute(
            select(ReviewLease.user_id, func.count())
            .where(ReviewLease.project_id == project_id, ReviewLease.expires_at > utcnow())
            .group_by(ReviewLease.user_id)
        ).tuples()
    }
    agreement: dict[int | None, Agreement] = defaultdict(Agreement)
    opinions = session.execute(
        select(
            SecondOpinion.first_user_id, SecondOpinion.second_user_id, SecondOpinion.state
        ).where(SecondOpinion.project_id == project_id)
    ).tuples()
    open_count = 0
    for first, second, state in opinions:
        if state is OpinionState.open:
            open_count += 1
            continue
        agreement[first].checked += 1
        agreement[first].agreed += state is OpinionState.agreed
        agreement[second].given += 1
    disagreements = session.scalar(
        select(func.count()).select_from(unresolved_disagreements(project_id).subquery())
    )
    return Progress(
        by_user=dict(by_user),
        by_class=dict(by_class),
        total=total,
        queue_left=left or 0,
        leases=leases,
        agreement=dict(agreement),
        open_opinions=open_count,
        disagreements=disagreements or 0,
    )


def names(session: Session, project_id: int) -> tuple[dict[int, str], dict[int, str]]:
    """Class names of the project and user names, by id."""
    classes = {
        cid: name
        for cid, name in session.execute(
            select(ImageClass.id, ImageClass.name).where(ImageClass.project_id == project_id)
        ).tuples()
    }
    users = {uid: name for uid, name in session.execute(select(User.id, User.username)).tuples()}
    return classes, users


def report(session: Session, project_id: int) -> ProgressOut:
    """The progress as the REST API and the team page show it: names, rates."""
    found = progress(session, project_id)
    classes, users = names(session, project_id)
    people = []
    for user_id in sorted(
        {*found.by_user, *found.leases, *found.agreement}, key=lambda u: users.get(u or 0, "")
    ):
        tally = found.by_user.get(user_id, Tally())
        agree = found.agreement.get(user_id, Agreement())
        people.append(
            PersonProgress(
                user=users.get(user_id or 0),
                holding=found.leases.get(user_id or 0, 0),
                checked=agree.checked,
                agreed=agree.agreed,
                agreement=agree.agreed / agree.checked if agree.checked else None,
                opinions_given=agree.given,
                **asdict(tally),
            )
        )
    per_class = [
        ClassProgress(label=classes.get(label_id or 0), **asdict(tally))
        for label_id, tally in sorted(
            found.by_class.items(), key=lambda kv: classes.get(kv[0] or 0, "~")
        )
    ]
    return ProgressOut(
        total=TallyOut(**asdict(found.total)),
        queue_left=found.queue_left,
        people=people,
        classes=per_class,
        open_opinions=found.open_opinions,
        disagreements=found.disagreements,
    )
