"""The review order stored with the images (images.review_rank) lists exactly what sorting
the scores lists, on SQLite and Postgres, and is used only for the ranking it holds."""

from __future__ import annotations

import random
from typing import Any

from alembic import command
from sqlalchemy import Engine, event, select
from sqlalchemy.orm import Session, sessionmaker

from core.db import make_engine, make_session_factory, refresh_statistics, transaction
from core.images import ImageFilter, list_images
from core.migrate import alembic_config, upgrade
from core.review import next_batch
from core.review_rank import store_review_rank
from core.tables import Image, ImageScore, ImageState, ModelVersion, Project, User
from tests.scored import scored_project
from tests.services import PostgresServer

IMAGES = 300
BY_RANK = "ORDER BY images.review_rank"


def _seed(factory: sessionmaker[Session]) -> int:
    """Scored images with tied losses, deleted ones, and images without a score."""
    rng = random.Random(3)
    with transaction(factory) as s:
        seeded = scored_project(
            s, ["grizzly", "black", "teddy"], IMAGES, loss=lambda _n: rng.choice([0.5, 1.0, 2.0])
        )
        for image in seeded.images[::7]:
            image.state = ImageState.deleted
        pid = seeded.project.id
        s.add_all(
            Image(project_id=pid, sha256=f"new{n:061x}", state=ImageState.ok) for n in range(20)
        )
        s.flush()
        refresh_statistics(s, Image.__tablename__, ImageScore.__tablename__)
    return pid


def _expected(s: Session, pid: int, model_id: int, flt: ImageFilter) -> list[int]:
    """Sorted in Python: highest loss first, ties and unscored images by id."""
    loss = dict(
        s.execute(
            select(ImageScore.image_id, ImageScore.loss).where(
                ImageScore.model_version_id == model_id, ImageScore.method == "in_sample"
            )
        ).all()
    )
    images = s.scalars(select(Image).where(Image.project_id == pid)).all()
    kept = [
        i.id
        for i in images
        if (flt.state is None or i.state == flt.state)
        and (flt.label_id is None or i.label_id == flt.label_id)
    ]
    return sorted(kept, key=lambda i: (i not in loss, -loss.get(i, 0.0), i))


def _listed(s: Session, pid: int, flt: ImageFilter, offset: int, limit: int) -> list[int]:
    _, items = list_images(s, pid, flt, sort="-loss", limit=limit, offset=offset)
    return [item.id for item in items]


def _pages(s: Session, pid: int, **kw: object) -> list[int]:
    out: list[int] = []
    for offset in range(0, IMAGES + 40, 64):
        out += _listed(s, pid, ImageFilter(**kw), offset, 64)  # type: ignore[arg-type]
    return out


def _statements(engine: Engine) -> list[str]:
    seen: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *a: seen.append(a[2]))
    return seen


def test_the_stored_order_is_the_sorted_order(engine: Engine) -> None:
    factory = make_session_factory(engine)
    pid = _seed(factory)
    with transaction(factory) as s:
        project = s.get(Project, pid)
        assert project is not None and project.review_method == "in_sample"
        model_id = project.review_model_id
        assert model_id is not None
        seen = _statements(engine)
        for kw in ({}, {"state": ImageState.ok}, {"label_id": project.classes[1].id}):
            flt = ImageFilter(**kw)
            assert _pages(s, pid, **kw) == _expected(s, pid, model_id, flt), kw
        pages = [q for q in seen if "OFFSET" in q and q.startswith("SELECT images.id")]
        # The pages were found from the stored order, without joining the scores to sort.
        assert pages and all(BY_RANK in q for q in pages)


def test_a_newer_ranking_replaces_the_stored_order_and_an_older_one_is_still_sorted(
    engine: Engine,
) -> None:
    factory = make_session_factory(engine)
    pid = _seed(factory)
    with transaction(factory) as s:
        old = s.scalars(select(ModelVersion.id).where(ModelVersion.project_id == pid)).one()
        before = {i.id: (i.version, i.updated_at) for i in s.scalars(select(Image))}
        new = ModelVersion(project_id=pid, arch="resnet18", classes=["grizzly", "black", "teddy"])
        s.add(new)
        s.flush()
        # The new model scores half of the images, in the opposite order.
        scored = s.scalars(select(Image).where(Image.project_id == pid).order_by(Image.id)).all()
        s.add_all(
            ImageScore(
                model_version_id=new.id,
                image_id=image.id,
                method="in_sample",
                loss=float(image.id),
                label_id=image.label_id,
                predicted_id=image.label_id,
                probability=0.5,
            )
            for image in scored[::2]
        )
        s.flush()
        store_review_rank(s, pid)
        new_id = new.id
    with transaction(factory) as s:
        project = s.get(Project, pid)
        assert project is not None and project.review_model_id == new_id
        assert _pages(s, pid) == _expected(s, pid, new_id, ImageFilter())
        # An older model asked for by id: sorted from its scores, as before.
        seen = _statements(engine)
        assert _pages(s, pid, model_version_id=old) == _expected(s, pid, old, ImageFilter())
        assert not any(BY_RANK in q for q in seen)
        # Ranking changed no image: versions (stale-edit checks) and updated_at stand.
        after = {i.id: (i.version, i.updated_at) for i in s.scalars(select(Image))}
        assert after == before


def _page_plan(engine: Engine, captured: list[tuple[str, Any]]) -> list[str]:
    """Postgres's plan of the last listing's page: the lines under its Limit."""
    statement, params = next((q, p) for q, p in captured[::-1] if "OFFSET" in q)
    with engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        assert raw is not None
        cursor = raw.cursor()
        cursor.execute("EXPLAIN " + statement, params)
        lines = [row[0] for row in cursor.fetchall()]
    start = next(n for n, line in enumerate(lines) if "Limit" in line)
    indent = len(lines[start]) - len(lines[start].lstrip())
    under = [line for line in lines[start + 1 :]]
    end = next(
        (n for n, line in enumerate(under) if len(line) - len(line.lstrip()) <= indent),
        len(under),
    )
    return [lines[start], *under[:end]]


def test_postgres_finds_a_page_without_sorting_the_scores(
    postgres_server: PostgresServer,
) -> None:
    """Joining every image's score and sorting them cost ~10 ms of Postgres's CPU per page
    at 10,000 images; the stored order needs the images alone (their index at the top)."""
    url = postgres_server.create_database()
    upgrade(url)
    engine = make_engine(url)
    try:
        factory = make_session_factory(engine)
        with transaction(factory) as s:
            pid = scored_project(s, ["a", "b"], 3000, loss=lambda n: (n * 7919) % 3001).project.id
            refresh_statistics(s, Image.__tablename__, ImageScore.__tablename__)
        captured: list[tuple[str, Any]] = []
        event.listen(engine, "before_cursor_execute", lambda *a: captured.append((a[2], a[3])))
        for offset in (0, 2500):
            with transaction(factory) as s:
                _listed(s, pid, ImageFilter(state=ImageState.ok), offset, 100)
            plan = _page_plan(engine, captured)
            assert not any("image_scores" in line for line in plan), plan
            if offset == 0:
                assert any("ix_images_review" in line for line in plan), plan
    finally:
        engine.dispose()


def test_upgrading_fills_the_stored_order_of_projects_already_ranked(engine: Engine) -> None:
    factory = make_session_factory(engine)
    pid = _seed(factory)
    url = engine.url.render_as_string(hide_password=False)
    engine.dispose()
    command.downgrade(alembic_config(url), "0008")
    upgrade(url)
    with transaction(factory) as s:
        project = s.get(Project, pid)
        assert project is not None and project.review_method == "in_sample"
        assert project.review_model_id is not None
        seen = _statements(engine)
        expected = _expected(s, pid, project.review_model_id, ImageFilter())
        assert _pages(s, pid) == expected
        assert any(BY_RANK in q for q in seen)


def test_the_team_queue_hands_out_batches_in_the_same_order(engine: Engine) -> None:
    """A reviewer's next batch is the top of the review order among undecided images nobody
    holds: read from the stored order while it holds the newest ranking, sorted from the
    scores when it does not (here: the stored order of another method)."""
    factory = make_session_factory(engine)
    pid = _seed(factory)
    for stored in (True, False):
        with transaction(factory) as s:
            project = s.get(Project, pid)
            assert project is not None and project.review_model_id is not None
            if not stored:
                project.review_method = "out_of_fold"
            owner = s.scalars(select(User.id)).first()
            assert owner is not None
            expected = _expected(s, pid, project.review_model_id, ImageFilter(state=ImageState.ok))
            seen = _statements(engine)
            # One batch of the whole queue, then one of the top ten of a class.
            assert next_batch(s, pid, owner, IMAGES + 100, ttl=600).image_ids == expected
            label = project.classes[1].id
            top = [i for i in expected if s.get(Image, i).label_id == label][:10]  # type: ignore[union-attr]
            assert next_batch(s, pid, owner, 10, ttl=600, label_id=label).image_ids == top
            queue = [q for q in seen if q.startswith("SELECT images.id") and "LIMIT" in q]
            assert queue and all((BY_RANK in q) == stored for q in queue), stored
            s.rollback()
