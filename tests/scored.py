"""A project with scored images and people with API tokens, written directly with the core
functions: what the review, query-count and load tests and bench/api_load.py start from
(no files: the REST paths they exercise never read them)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session

from core.projects import create_project
from core.review_rank import store_review_rank
from core.schemas import ClassIn, ProjectIn
from core.security import new_api_token, token_digest
from core.tables import (
    ApiToken,
    Image,
    ImageScore,
    ImageState,
    ModelVersion,
    Project,
    ProjectMember,
    Role,
    User,
)
from core.users import create_user


@dataclass
class Scored:
    project: Project
    class_ids: list[int]
    images: list[Image]
    # API tokens by user name: the owner's first, then the editors'.
    tokens: dict[str, str]


def scored_project(
    session: Session,
    classes: Sequence[str],
    count: int,
    loss: Callable[[int], float],
    owner: str = "owner",
    editors: Sequence[str] = (),
    predicted: Callable[[int], int] | None = None,
    probability: Callable[[int], float] = lambda _n: 0.5,
    **image_fields: object,
) -> Scored:
    """``count`` verified images labelled round-robin over ``classes``, image n with an
    in-sample score ``loss(n)`` (predicted: class index ``predicted(n)``, by default the next
    class), owned by ``owner``; each editor a member. Everyone gets an API token."""
    user = create_user(session, owner, f"{owner}-password")
    project = create_project(
        session, ProjectIn(name="bears", classes=[ClassIn(name=c) for c in classes]), user.id
    )
    session.flush()
    ids = [c.id for c in project.classes]
    images = [
        Image(
            project_id=project.id,
            sha256=f"{n:064x}",
            state=ImageState.ok,
            label_id=ids[n % len(ids)],
            **image_fields,
        )
        for n in range(count)
    ]
    session.add_all(images)
    model = ModelVersion(project_id=project.id, arch="resnet18", classes=list(classes))
    session.add(model)
    session.flush()
    guess = predicted or (lambda n: (n + 1) % len(ids))
    session.add_all(
        ImageScore(
            model_version_id=model.id,
            image_id=image.id,
            method="in_sample",
            loss=loss(n),
            label_id=image.label_id,
            predicted_id=ids[guess(n)],
            probability=probability(n),
        )
        for n, image in enumerate(images)
    )
    session.flush()
    store_review_rank(session, project.id)  # as the rank job does with its scores
    tokens = {owner: api_token(session, user)}
    for name in editors:
        editor = create_user(session, name, f"{name}-password")
        session.add(ProjectMember(project_id=project.id, user_id=editor.id, role=Role.editor))
        tokens[name] = api_token(session, editor)
    session.flush()
    return Scored(project, ids, images, tokens)


def api_token(session: Session, user: User) -> str:
    token = new_api_token()
    session.add(ApiToken(user_id=user.id, name="t", token_hash=token_digest(token), prefix="x"))
    return token
