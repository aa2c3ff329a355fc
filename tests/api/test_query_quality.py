"""Quality per search query over REST: harvested, rejected, deleted, relabelled, flagged."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from api.main import create_app
from core.db import transaction
from core.ingest import Provenance, add_image
from core.projects import create_project
from core.schemas import ClassIn, ProjectIn
from core.store import LocalStore
from core.tables import ImageScore, ImageState, LabelAction, LabelEvent, ModelVersion
from core.users import create_user
from tests.api.test_labels import _auth
from tests.conftest import migrated
from tests.imagegen import picture


def test_each_query_counts_what_happened_to_its_images(tmp_path: Path) -> None:
    settings, factory = migrated(tmp_path, "q")
    store = LocalStore(tmp_path)
    with transaction(factory) as s:
        user = create_user(s, "ann", "ann-password")
        project = create_project(
            s, ProjectIn(name="p", classes=[ClassIn(name="red"), ClassIn(name="blue")]), user.id
        )
        red, blue = project.classes[0].id, project.classes[1].id
        images = []
        for n in range(6):
            query = "red things" if n < 4 else "crimson"
            image, _ = add_image(
                s, store, project.id, picture("red", n), red, Provenance(query=query)
            )
            images.append(image)
        add_image(s, store, project.id, picture("red", 9), red, Provenance())
        images[0].state = ImageState.rejected
        images[1].state = ImageState.deleted
        images[4].label_id = blue
        s.flush()
        s.add(
            LabelEvent(
                project_id=project.id,
                image_id=images[4].id,
                user_id=user.id,
                action=LabelAction.relabel,
                old_label_id=red,
                new_label_id=blue,
                old_state="ok",
                new_state="ok",
            )
        )
        version = ModelVersion(project_id=project.id, arch="resnet18")
        s.add(version)
        s.flush()
        s.add_all(
            ImageScore(
                model_version_id=version.id,
                image_id=image.id,
                method="out_of_fold",
                loss=1.0,
                probability=0.5,
                issue=image is images[2],
            )
            for image in images
        )
        pid = project.id
    with TestClient(create_app(settings)) as client:
        auth = _auth(client, "ann")
        rows = client.get(f"/api/projects/{pid}/queries/quality", headers=auth)
        # The same figures on the project page, each query linking to its images.
        page = client.get(f"/projects/{pid}", headers=auth).text
    assert "<h2>Search queries</h2>" in page and "<h2>Class balance</h2>" in page
    assert "query=red+things" in page and "<td>red things</td>" not in page
    assert rows.status_code == 200
    assert rows.json() == [
        {
            "query": "red things",
            "harvested": 4,
            "rejected": 1,
            "deleted": 1,
            "relabelled": 0,
            "flagged": 1,
        },
        {
            "query": "crimson",
            "harvested": 2,
            "rejected": 0,
            "deleted": 0,
            "relabelled": 1,
            "flagged": 0,
        },
    ]
