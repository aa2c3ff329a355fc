"""Cleaning as a team, as the owner sees it: decisions per person and per class (the class an
image had when decided), images held in the shared queue now, and agreement with second
opinions."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import asdict, dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.columns import utcnow
from core.images import unresolved_disagreements
from core.review import DECISIONS, PEOPLE, decided
from core.review_schemas import ClassProgress, PersonProgress, ProgressOut, TallyOut
from core.tables import Image, ImageClass, ImageState, LabelAction, LabelEvent, User
from core.team_tables import OpinionState, ReviewLease, SecondOpinion


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
    )
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
            Image.project_id == project_id, Image.state == ImageState.ok, ~decided().exists()
        )
    )
    leases = {
        user_id: count
        for user_id, count in session.execute(
            select(ReviewLease.user_id, func.count())
            .where(ReviewLease.project_id == project_id, ReviewLease.expires_at > utcnow())
            .group_by(ReviewLease.user_id)
        )
    }
    agreement: dict[int | None, Agreement] = defaultdict(Agreement)
    opinions = session.execute(
        select(
            SecondOpinion.first_user_id, SecondOpinion.second_user_id, SecondOpinion.state
        ).where(SecondOpinion.project_id == project_id)
    )
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
        )
    }
    users = {uid: name for uid, name in session.execute(select(User.id, User.username))}
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
