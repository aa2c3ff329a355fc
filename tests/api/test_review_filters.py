"""Review filters over REST and in the page: reject reason, search query, and duplicates
whose copies carry different labels."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from api.main import create_app
from core.db import transaction
from core.ingest import Provenance, add_image
from core.projects import create_project
from core.schemas import ClassIn, ProjectIn
from core.store import image_store
from core.tables import ImageState
from core.users import create_user
from tests.conftest import migrated
from tests.imagegen import picture


def test_filters_find_the_junk_of_one_query_and_cross_class_duplicates(tmp_path: Path) -> None:
    settings, factory = migrated(tmp_path, "k")
    store = image_store(settings)
    with transaction(factory) as s:
        user = create_user(s, "ann", "ann-password")
        project = create_project(
            s,
            ProjectIn(name="p", classes=[ClassIn(name="grizzly"), ClassIn(name="black")]),
            user.id,
        )
        grizzly, black = (c.id for c in project.classes)
        rows = []
        for n, (label, query, reason) in enumerate(
            [
                (grizzly, "grizzly bear", None),
                (grizzly, "grizzly bear", "too small"),
                (black, "black bear", None),
                (black, "black bear toy", "not an image"),
                (grizzly, None, None),
            ]
        ):
            image, _ = add_image(s, store, project.id, picture("red", n), label, Provenance())
            image.query = query
            image.reject_reason = reason
            image.state = ImageState.rejected if reason else ImageState.ok
            rows.append(image)
        s.flush()
        rows[4].duplicate_of_id = rows[2].id  # a near-copy of a black bear, filed as grizzly
        rows[0].duplicate_of_id = rows[1].id  # same label: not a cross-class pair
        pid = project.id
        ids = [r.id for r in rows]
    with TestClient(create_app(settings)) as client:
        client.post("/api/auth/login", json={"username": "ann", "password": "ann-password"})

        def found(**params: str) -> list[int]:
            page = client.get(f"/api/projects/{pid}/images", params=params).json()
            return [item["id"] for item in page["items"]]

        assert found(reason="not an image") == [ids[3]]
        assert found(query="black bear toy") == [ids[3]]
        assert found(query="grizzly bear") == [ids[0], ids[1]]
        assert found(cross_class="true") == [ids[4]]
        review = client.get(f"/projects/{pid}/review", params={"state": "cross-class"}).text
        assert f'data-id="{ids[4]}"' in review and f'data-id="{ids[0]}"' not in review
        junk = client.get(
            f"/projects/{pid}/review", params={"state": "all", "query": "black bear toy"}
        ).text
        assert f'data-id="{ids[3]}"' in junk and "<option selected>black bear toy</option>" in junk


def test_a_thumbnail_is_cached_by_its_hash_and_a_second_load_is_a_304(tmp_path: Path) -> None:
    settings, factory = migrated(tmp_path, "k")
    store = image_store(settings)
    with transaction(factory) as s:
        user = create_user(s, "ann", "ann-password")
        project = create_project(s, ProjectIn(name="p", classes=[ClassIn(name="a")]), user.id)
        data = picture("red", 1)
        image, _ = add_image(s, store, project.id, data, project.classes[0].id, Provenance())
        store.put(data, "thumb", sha256=image.sha256)
        url = f"/api/projects/{project.id}/images/{image.id}/file?variant=thumb"
    with TestClient(create_app(settings)) as client:
        client.post("/api/auth/login", json={"username": "ann", "password": "ann-password"})
        first = client.get(url)
        assert first.status_code == 200 and first.content == data
        assert "immutable" in first.headers["cache-control"]
        again = client.get(url, headers={"If-None-Match": first.headers["etag"]})
        assert again.status_code == 304 and again.content == b""
        assert again.headers["etag"] == first.headers["etag"]
        other = client.get(url, headers={"If-None-Match": '"something-else"'})
        assert other.status_code == 200
