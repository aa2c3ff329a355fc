"""Cleaning decisions through REST: audit trail, undo, stale versions, bulk, viewers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from core.db import transaction
from core.ingest import Provenance, add_image
from core.projects import create_project
from core.schemas import ClassIn, ProjectIn
from core.store import LocalStore, image_key
from core.tables import Image, ImageState, ProjectMember, Role
from core.users import create_user
from tests.conftest import migrated
from tests.imagegen import picture


@pytest.fixture
def seeded(tmp_path: Path) -> Iterator[tuple[TestClient, int, list[int]]]:
    """A project with classes red/blue, six ok images (normalised copies present), one rejected."""
    settings, factory = migrated(tmp_path, "k")
    store = LocalStore(tmp_path)
    with transaction(factory) as s:
        user = create_user(s, "ann", "ann-password")
        viewer = create_user(s, "vic", "vic-password")
        project = create_project(
            s, ProjectIn(name="p", classes=[ClassIn(name="red"), ClassIn(name="blue")]), user.id
        )
        red = project.classes[0].id
        ids = []
        for n in range(7):
            data = picture("red", n)
            image, _ = add_image(s, store, project.id, data, red, Provenance())
            store.put(data, "normal", sha256=image.sha256)
            image.state = ImageState.ok if n < 6 else ImageState.rejected
            image.reject_reason = None if n < 6 else "broken file"
            ids.append(image.id)
        broken = s.get(Image, ids[-1])
        assert broken is not None
        store.delete(image_key(broken.sha256, "normal"))
        s.add(ProjectMember(project_id=project.id, user_id=viewer.id, role=Role.viewer))
        pid = project.id
    with TestClient(create_app(settings)) as client:
        yield client, pid, ids


def _auth(client: TestClient, username: str) -> dict[str, str]:
    fresh = TestClient(client.app)
    fresh.post("/api/auth/login", json={"username": username, "password": f"{username}-password"})
    csrf = client.app.state.signer.csrf_token(fresh.cookies["winnow_session"])  # type: ignore[attr-defined]
    token = fresh.post("/api/users/me/tokens", json={}, headers={"X-CSRF-Token": csrf}).json()
    return {"Authorization": f"Bearer {token['token']}"}


def test_every_change_is_an_event_and_undoable(seeded: tuple[TestClient, int, list[int]]) -> None:
    client, pid, ids = seeded
    h = _auth(client, "ann")
    url = f"/api/projects/{pid}/images/{ids[0]}"
    v = client.get(url, headers=h).json()["version"]
    relabel = client.patch(url, json={"version": v, "label": "blue"}, headers=h).json()
    deleted = client.patch(
        url, json={"version": relabel["version"], "action": "delete"}, headers=h
    ).json()
    assert deleted["state"] == "deleted" and deleted["label"] == "blue"
    events = client.get(f"/api/projects/{pid}/events?image_id={ids[0]}", headers=h).json()
    assert [e["action"] for e in events] == ["delete", "relabel"]
    assert events[1]["old_label"] == "red" and events[1]["new_label"] == "blue"
    # Undoing the relabel first is refused: the delete came after it.
    refused = client.post(f"/api/projects/{pid}/events/{events[1]['id']}/undo", headers=h)
    assert refused.status_code == 409
    for event in events:
        assert (
            client.post(f"/api/projects/{pid}/events/{event['id']}/undo", headers=h).status_code
            == 201
        )
    image = client.get(url, headers=h).json()
    assert (image["state"], image["label"]) == ("ok", "red")
    # An event is undone once.
    again = client.post(f"/api/projects/{pid}/events/{events[0]['id']}/undo", headers=h)
    assert again.status_code == 409
    trail = client.get(f"/api/projects/{pid}/events?image_id={ids[0]}", headers=h).json()
    assert [e["action"] for e in trail] == ["undo", "undo", "delete", "relabel"]
    newer = client.get(f"/api/projects/{pid}/events?after={trail[1]['id']}", headers=h).json()
    assert [e["id"] for e in newer] == [trail[0]["id"]]


def test_restore_rules(seeded: tuple[TestClient, int, list[int]]) -> None:
    client, pid, ids = seeded
    h = _auth(client, "ann")
    broken = client.get(f"/api/projects/{pid}/images/{ids[6]}", headers=h).json()
    refused = client.patch(
        f"/api/projects/{pid}/images/{ids[6]}",
        json={"version": broken["version"], "action": "restore"},
        headers=h,
    )
    assert refused.status_code == 409 and "no decodable copy" in refused.json()["detail"]
    ok = client.get(f"/api/projects/{pid}/images/{ids[1]}", headers=h).json()
    nothing = client.patch(
        f"/api/projects/{pid}/images/{ids[1]}",
        json={"version": ok["version"], "action": "restore"},
        headers=h,
    )
    assert nothing.status_code == 409


def test_bulk_reports_conflicts_and_applies_the_rest(
    seeded: tuple[TestClient, int, list[int]],
) -> None:
    client, pid, ids = seeded
    h = _auth(client, "ann")
    images = [client.get(f"/api/projects/{pid}/images/{i}", headers=h).json() for i in ids[:4]]
    # Someone else changes image 2 first.
    client.patch(
        f"/api/projects/{pid}/images/{ids[2]}",
        json={"version": images[2]["version"], "action": "keep"},
        headers=h,
    )
    result = client.post(
        f"/api/projects/{pid}/images/bulk",
        json={
            "action": "relabel",
            "label": "blue",
            "images": [{"id": i["id"], "version": i["version"]} for i in images],
        },
        headers=h,
    ).json()
    assert result["conflicts"] == [ids[2]]
    assert sorted(i["id"] for i in result["changed"]) == sorted([ids[0], ids[1], ids[3]])
    assert client.get(f"/api/projects/{pid}/images/{ids[2]}", headers=h).json()["label"] == "red"


def test_viewers_cannot_change_images(seeded: tuple[TestClient, int, list[int]]) -> None:
    client, pid, ids = seeded
    h = _auth(client, "vic")
    image = client.get(f"/api/projects/{pid}/images/{ids[0]}", headers=h).json()
    refused = client.patch(
        f"/api/projects/{pid}/images/{ids[0]}",
        json={"version": image["version"], "action": "delete"},
        headers=h,
    )
    assert refused.status_code == 403


def test_unknown_label_is_a_clear_error(seeded: tuple[TestClient, int, list[int]]) -> None:
    client, pid, ids = seeded
    h = _auth(client, "ann")
    response = client.patch(
        f"/api/projects/{pid}/images/{ids[0]}", json={"version": 1, "label": "purple"}, headers=h
    )
    assert response.status_code == 422 and "purple" in response.json()["detail"]
    # The sentence is what the OpenAPI schema promises for a 422 (as well as FastAPI's list):
    # a client generated from the schema can read it.
    spec = client.get("/api/openapi.json").json()
    documented = spec["paths"]["/api/projects/{project_id}/images/{image_id}"]["patch"]
    error = documented["responses"]["422"]["content"]["application/json"]["schema"]
    resolver = {
        **spec["components"]["schemas"]["HTTPValidationError"],
        "components": spec["components"],
    }
    assert error == {"$ref": "#/components/schemas/HTTPValidationError"}
    jsonschema.validate(response.json(), resolver)


def test_same_file_under_two_classes_is_a_review_item(tmp_path: Path) -> None:
    settings, factory = migrated(tmp_path, "k")
    store = LocalStore(tmp_path)
    data = picture("blue", 1)
    with transaction(factory) as s:
        user = create_user(s, "ann", "ann-password")
        project = create_project(
            s, ProjectIn(name="p", classes=[ClassIn(name="red"), ClassIn(name="blue")]), user.id
        )
        red, blue = (c.id for c in project.classes)
        first, created = add_image(s, store, project.id, data, red, Provenance())
        again, created_again = add_image(s, store, project.id, data, blue, Provenance())
        assert created and not created_again and again.id == first.id
        assert (again.label_id, again.other_label_ids, again.seen_count) == (red, [blue], 2)
        first.state = ImageState.ok
        pid, image_id = project.id, first.id
    with TestClient(create_app(settings)) as client:
        h = _auth(client, "ann")
        groups = client.get(f"/api/projects/{pid}/duplicates?cross_class=true", headers=h).json()
        assert [g["first_id"] for g in groups] == [image_id]
        listed = client.get(f"/api/projects/{pid}/images?state=duplicates", headers=h)
        assert listed.status_code == 422  # "duplicates" is a filter of its own, not a state
        dups = client.get(f"/api/projects/{pid}/images?duplicates=true", headers=h).json()
        assert [i["id"] for i in dups["items"]] == [image_id]
        version = dups["items"][0]["version"]
        # Settling the label settles the conflict.
        client.patch(
            f"/api/projects/{pid}/images/{image_id}",
            json={"version": version, "label": "blue"},
            headers=h,
        )
        assert (
            client.get(f"/api/projects/{pid}/duplicates?cross_class=true", headers=h).json() == []
        )
