"""Near-duplicate pairs of the latest ranking as review items: cross-class first, with both
images as they are now, settled pairs out of the way, on the REST API and the pairs page."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from fastapi.testclient import TestClient

from api.main import create_app
from core.columns import utcnow
from core.db import transaction
from core.projects import create_project
from core.schemas import ClassIn, ProjectIn
from core.tables import Image, ImageState, Job, JobStatus
from core.users import create_user
from tests.conftest import migrated

MARKUP = "<img src=x onerror=alert(1)>"


def _seed(tmp_path: Path) -> tuple[TestClient, int, list[int]]:
    settings, factory = migrated(tmp_path, "k")
    with transaction(factory) as s:
        user = create_user(s, "ann", "ann-password")
        project = create_project(
            s, ProjectIn(name="p", classes=[ClassIn(name="grizzly"), ClassIn(name=MARKUP)]), user.id
        )
        s.flush()
        grizzly, other = (c.id for c in project.classes)
        images = [
            Image(project_id=project.id, sha256=f"{n:064x}", state=ImageState.ok, label_id=label)
            for n, label in enumerate([grizzly, grizzly, grizzly, other, grizzly, grizzly])
        ]
        s.add_all(images)
        s.flush()
        ids = [i.id for i in images]
        pairs = [
            # same class, most similar; cross-class, less similar; another cross-class
            {"image_ids": [ids[0], ids[1]], "similarity": 0.995, "cross_class": False},
            {"image_ids": [ids[2], ids[3]], "similarity": 0.981, "cross_class": True},
            {"image_ids": [ids[4], ids[3]], "similarity": 0.975, "cross_class": True},
            {"image_ids": [ids[4], ids[5]], "similarity": 0.99, "cross_class": False},
        ]
        done = utcnow() - timedelta(seconds=5)
        s.add(Job(project_id=project.id, kind="rank", status=JobStatus.failed, finished_at=done))
        s.add(
            Job(
                project_id=project.id,
                kind="rank",
                status=JobStatus.succeeded,
                finished_at=done,
                result={"model_version_id": 7, "similar_pairs": pairs},
            )
        )
        pid = project.id
    client = TestClient(create_app(settings))
    login = client.post("/api/auth/login", json={"username": "ann", "password": "ann-password"})
    assert login.status_code == 200
    signer = client.app.state.signer  # type: ignore[attr-defined]
    client.headers["X-CSRF-Token"] = signer.csrf_token(client.cookies["winnow_session"])
    return client, pid, ids


def _pairs(client: TestClient, pid: int, **params: object) -> dict:
    response = client.get(f"/api/projects/{pid}/similar-pairs", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def test_pairs_come_cross_class_first_and_leave_once_decided(tmp_path: Path) -> None:
    client, pid, ids = _seed(tmp_path)
    with client:
        page = _pairs(client, pid)
        assert page["model_version_id"] == 7 and page["total"] == 4
        order = [[i["id"] for i in p["images"]] for p in page["items"]]
        assert order == [[ids[2], ids[3]], [ids[4], ids[3]], [ids[0], ids[1]], [ids[4], ids[5]]]
        first = page["items"][0]
        assert first["cross_class"] and [i["label"] for i in first["images"]] == ["grizzly", MARKUP]
        assert [p["cross_class"] for p in _pairs(client, pid, cross_class=True)["items"]] == [
            True
        ] * 2

        # The page shows the pairs with both labels (escaped) and an editor's actions.
        html = client.get(f"/projects/{pid}/pairs").text
        assert html.count('class="pair card') == 4
        assert MARKUP not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
        assert 'data-action="delete"' in html and "label as grizzly" in html

        # Relabel settles a cross-class pair; deleting one image settles a same-class pair;
        # keeping both settles it too.
        version = first["images"][1]["version"]
        fix = client.patch(
            f"/api/projects/{pid}/images/{ids[3]}", json={"version": version, "label": "grizzly"}
        )
        assert fix.status_code == 200, fix.text
        image = client.get(f"/api/projects/{pid}/images/{ids[1]}").json()
        client.patch(
            f"/api/projects/{pid}/images/{ids[1]}",
            json={"version": image["version"], "action": "delete"},
        )
        for image_id in (ids[4], ids[5]):
            v = client.get(f"/api/projects/{pid}/images/{image_id}").json()["version"]
            client.patch(
                f"/api/projects/{pid}/images/{image_id}", json={"version": v, "action": "keep"}
            )
        assert _pairs(client, pid)["total"] == 0
        everything = _pairs(client, pid, settled=True)
        assert everything["total"] == 4 and all(p["settled"] for p in everything["items"])
        assert client.get(f"/projects/{pid}/pairs?settled=true").text.count("pair card done") == 4


def test_without_a_ranking_the_list_is_empty_and_says_why(tmp_path: Path) -> None:
    settings, factory = migrated(tmp_path, "k")
    with transaction(factory) as s:
        user = create_user(s, "ann", "ann-password")
        pid = create_project(s, ProjectIn(name="p"), user.id).id
    with TestClient(create_app(settings)) as client:
        client.post("/api/auth/login", json={"username": "ann", "password": "ann-password"})
        empty: dict[str, object] = {
            "job_id": None,
            "model_version_id": None,
            "total": 0,
            "items": [],
        }
        assert _pairs(client, pid) == empty
        assert "No ranking yet" in client.get(f"/projects/{pid}/pairs").text
