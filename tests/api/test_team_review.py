"""Cleaning as a team against a served API of two processes: the shared queue hands no image
to two reviewers, an abandoned batch comes back after its lease, the owner's progress adds
up to the decisions made, and blind second opinions end in agreement or a review list."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.config import Settings
from core.db import make_engine, make_session_factory, transaction
from core.migrate import upgrade
from core.projects import create_project
from core.schemas import ClassIn, ProjectIn
from core.tables import Image, ImageState
from core.team_tables import ReviewLease
from core.users import create_user
from tests.scored import scored_project
from tests.services import PostgresServer, ServeProcess, winnow_env

LEASE = 6.0  # seconds: short enough to watch a batch come back, long enough for a round
IMAGES = 60
REVIEWERS = ("ann", "bob", "cat")


@dataclass
class Team:
    url: str
    project_id: int
    tokens: dict[str, str]
    settings: Settings

    def client(self, who: str) -> httpx.Client:
        return httpx.Client(
            base_url=f"{self.url}/api/projects/{self.project_id}",
            headers={"Authorization": f"Bearer {self.tokens[who]}"},
            timeout=30,
        )


@pytest.fixture(params=["sqlite", "postgres"])
def team(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Team]:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    database_url = ""
    if request.param == "postgres":
        postgres: PostgresServer = request.getfixturevalue("postgres_server")
        database_url = postgres.create_database()
    settings = Settings(data_dir=data_dir, secret_key="k", database_url=database_url)
    upgrade(settings.db_url)
    engine = make_engine(settings.db_url)
    with transaction(make_session_factory(engine)) as s:
        # Image n ranks n-th: its loss falls with n.
        seeded = scored_project(
            s,
            ["grizzly", "teddy"],
            IMAGES,
            loss=lambda n: float(IMAGES - n),
            owner="olga",
            editors=REVIEWERS,
            probability=lambda _n: 0.9,
        )
        pid, tokens = seeded.project.id, seeded.tokens
    engine.dispose()
    env = winnow_env(
        data_dir,
        WINNOW_SECRET_KEY="k",
        WINNOW_DATABASE_URL=database_url,
        WINNOW_REVIEW_LEASE_SECONDS=str(LEASE),
    )
    server = ServeProcess(env, tmp_path / "serve.log", "--no-worker", "--workers", "2")
    try:
        yield Team(server.url, pid, tokens, settings)
    finally:
        server.stop()


def _batch(client: httpx.Client, **body: Any) -> list[int]:
    response = client.post("/review/batch", json={"size": 5, **body})
    assert response.status_code == 200, response.text
    data = response.json()
    return [item["id"] for item in (data["blind"] if body.get("second_opinion") else data["items"])]


def _concurrently(team: Team, calls: dict[str, Any]) -> dict[str, Any]:
    """Run one call per reviewer at the same moment (each from its own thread and client)."""
    results: dict[str, Any] = {}
    start = threading.Barrier(len(calls))

    def run(who: str) -> None:
        with team.client(who) as client:
            start.wait()
            results[who] = calls[who](client)

    threads = [threading.Thread(target=run, args=(who,)) for who in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert set(results) == set(calls)
    return results


def _decide(client: httpx.Client, image_id: int, body: dict[str, Any]) -> None:
    version = client.get(f"/images/{image_id}").json()["version"]
    response = client.patch(f"/images/{image_id}", json={"version": version, **body})
    assert response.status_code == 200, response.text


def test_three_reviewers_never_share_a_tile_and_the_owner_sees_every_decision(
    team: Team,
) -> None:
    made: Counter[tuple[str, str]] = Counter()
    seen: dict[str, set[int]] = {who: set() for who in REVIEWERS}
    for _round in range(4):
        batches = _concurrently(team, {who: _batch for who in REVIEWERS})
        handed = [i for who in REVIEWERS for i in batches[who]]
        assert len(handed) == len(set(handed)) == 15, batches  # disjoint, all full
        # Each decides about two of their five; the rest go back with the next batch.
        for who, (first, second, *_rest) in ((w, batches[w]) for w in REVIEWERS):
            with team.client(who) as client:
                _decide(client, first, {"action": "relabel", "label": "teddy"})
                _decide(client, second, {"action": "delete"} if _round % 2 else {"action": "keep"})
            made[(who, "relabelled")] += 1
            made[(who, "deleted" if _round % 2 else "kept")] += 1
            seen[who] |= set(batches[who])
    # The queue goes by rank: the first round's batches were the 15 top-ranked images.
    with team.client("olga") as owner:
        progress = owner.get("/review/progress").json()
    people = {p["user"]: p for p in progress["people"]}
    for who in REVIEWERS:
        for what in ("relabelled", "deleted", "kept"):
            assert people[who][what] == made[(who, what)], (who, what, people[who])
        assert people[who]["decisions"] == people[who]["images"] == 8
        assert people[who]["holding"] == 5  # the last batch is still theirs
    assert progress["total"]["decisions"] == sum(made.values()) == 24
    assert sum(c["decisions"] for c in progress["classes"]) == 24
    assert progress["queue_left"] == IMAGES - 24 + 0  # deleted ones left the queue too
    # Only the owner sees the team's progress.
    with team.client("ann") as ann:
        assert ann.get("/review/progress").status_code == 403


def test_an_abandoned_batch_comes_back_after_its_lease_and_a_released_one_at_once(
    team: Team,
) -> None:
    with team.client("ann") as ann, team.client("bob") as bob, team.client("cat") as cat:
        abandoned = _batch(cat)  # cat walks away from the top five
        assert abandoned == sorted(abandoned)[:5] and len(abandoned) == 5
        first = _batch(ann)
        assert not set(first) & set(abandoned)
        time.sleep(LEASE + 0.5)
        again = _batch(ann)
        assert set(abandoned) <= set(again) | set(first), (abandoned, again)
        assert set(abandoned) & set(again)
        # Leaving hands a batch back without waiting.
        held = _batch(bob)
        assert bob.post("/review/release").status_code == 204
        assert bob.get("/review/batch").json()["items"] == []
        after = _batch(cat)
        assert set(held) & set(after), (held, after)
        # Renewing keeps a batch past its first lease.
        kept = _batch(ann)
        for _ in range(3):
            time.sleep(LEASE / 3)
            assert ann.post("/review/renew").json()["held"] == len(kept)
        assert not set(kept) & set(_batch(bob))


def test_second_opinions_are_blind_and_disagreements_become_a_review_list(team: Team) -> None:
    with team.client("ann") as ann, team.client("bob") as bob, team.client("olga") as owner:
        mine = _batch(ann)
        for image_id in mine[:3]:
            _decide(ann, image_id, {"action": "relabel", "label": "teddy"})
        _decide(ann, mine[3], {"action": "delete"})
        created = owner.post("/review/opinions", json={"top_relabels": 2}).json()["created"]
        assert created == 2
        more = owner.post("/review/opinions", json={"image_ids": mine[2:4]})
        assert more.json()["created"] == 2
        # Ann cannot check her own decisions: her blind batch is empty.
        assert _batch(ann, second_opinion=True) == []
        blind = bob.post("/review/batch", json={"size": 10, "second_opinion": True}).json()
        assert sorted(b["id"] for b in blind["blind"]) == sorted(mine[:4])
        assert blind["items"] == [] and all("label" not in b for b in blind["blind"])
        opinion = {b["id"]: b["opinion_id"] for b in blind["blind"]}
        answers = {
            mine[0]: {"label": "teddy"},  # agrees
            mine[1]: {"label": "grizzly"},  # disagrees
            mine[2]: {"delete": True},  # disagrees
            mine[3]: {"delete": True},  # agrees
        }
        for image_id, body in answers.items():
            answered = bob.post(f"/review/opinions/{opinion[image_id]}/answer", json=body)
            assert answered.status_code == 200, answered.text
        again = bob.post(f"/review/opinions/{opinion[mine[0]]}/answer", json={"label": "teddy"})
        assert again.status_code == 409
        # Nothing about the images changed: a second opinion is a check, not a decision.
        assert ann.get(f"/images/{mine[1]}").json()["label"] == "teddy"
        unresolved = owner.get("/review/opinions", params={"unresolved": True}).json()
        assert sorted(o["image_id"] for o in unresolved) == sorted(mine[1:3])
        assert {(o["first"], o["second"]) for o in unresolved} == {
            ("teddy", "grizzly"),
            ("teddy", "delete"),
        }
        listed = owner.get("/images", params={"disagreed": True}).json()
        assert sorted(i["id"] for i in listed["items"]) == sorted(mine[1:3])
        progress = owner.get("/review/progress").json()
        people = {p["user"]: p for p in progress["people"]}
        assert (people["ann"]["checked"], people["ann"]["agreed"]) == (4, 2)
        assert people["ann"]["agreement"] == 0.5 and people["bob"]["opinions_given"] == 4
        assert progress["disagreements"] == 2 and progress["open_opinions"] == 0
        # The owner settles one: it leaves the list.
        _decide(owner, mine[1], {"action": "relabel", "label": "grizzly"})
        left = owner.get("/review/opinions", params={"unresolved": True}).json()
        assert [o["image_id"] for o in left] == [mine[2]]


def test_leases_are_rows_one_per_image(tmp_path: Path) -> None:
    """The guarantee lives in the schema: a second lease on an image cannot be stored."""
    from sqlalchemy.exc import IntegrityError

    settings = Settings(data_dir=tmp_path, secret_key="k")
    upgrade(settings.db_url)
    factory = make_session_factory(make_engine(settings.db_url))
    with transaction(factory) as s:
        a = create_user(s, "a", "a-password")
        b = create_user(s, "b", "b-password")
        project = create_project(s, ProjectIn(name="p", classes=[ClassIn(name="x")]), a.id)
        image = Image(project_id=project.id, sha256="0" * 64, state=ImageState.ok)
        s.add(image)
        s.flush()
        ids = (project.id, image.id, a.id, b.id)
    from core.columns import utcnow

    with pytest.raises(IntegrityError), transaction(factory) as s:
        for user_id in ids[2:]:
            s.add(
                ReviewLease(
                    image_id=ids[1], project_id=ids[0], user_id=user_id, expires_at=utcnow()
                )
            )
            s.flush()
