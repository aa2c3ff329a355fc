"""The review listing serialises its rows without a model per row (core.images.page_json):
what it sends is byte for byte what ImagePage would send, on SQLite and Postgres, for every
kind of value a tile can hold."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import Engine

from api.main import create_app
from core.config import Settings
from core.db import make_session_factory, transaction
from core.images import ImageFilter, Sort, list_images
from core.schemas import ImagePage
from core.tables import Image, ImageState
from tests.scored import scored_project

QUERIES: list[tuple[dict[str, str], ImageFilter, Sort]] = [
    ({"sort": "-loss"}, ImageFilter(), "-loss"),
    ({"sort": "loss", "limit": "5", "offset": "3"}, ImageFilter(), "loss"),
    ({"sort": "-id"}, ImageFilter(), "-id"),
    ({"label": "-"}, ImageFilter(unlabelled=True), "id"),
    ({"state": "rejected"}, ImageFilter(state=ImageState.rejected), "id"),
    ({"duplicates": "true", "sort": "-loss"}, ImageFilter(duplicates=True), "-loss"),
    ({"reason": "too small"}, ImageFilter(reject_reason="too small"), "id"),
]


def test_the_listing_sends_what_imageout_sends(engine: Engine, tmp_path: Path) -> None:
    factory = make_session_factory(engine)
    with transaction(factory) as s:
        seeded = scored_project(
            s, ["grizzly", "black", "teddy"], 12, loss=lambda n: n / 7, owner="ann"
        )
        first, second, third, fourth, fifth, sixth = seeded.images[:6]
        first.label_id = None
        second.state, second.reject_reason = ImageState.rejected, "too small"
        third.other_label_ids = [seeded.class_ids[1], seeded.class_ids[2]]
        fourth.duplicate_of_id = fifth.id
        sixth.title, sixth.page_url = 'Grizzly "ours" <b>é</b>', "https://example.com/a?b=c&d"
        sixth.width, sixth.height, sixth.format, sixth.file_size = 640, 480, "JPEG", 12345
        # An image without a score: its loss, prediction and probability are null.
        s.add(Image(project_id=seeded.project.id, sha256="f" * 64, label_id=seeded.class_ids[0]))
        pid, token = seeded.project.id, seeded.tokens["ann"]
    url = engine.url.render_as_string(hide_password=False)
    settings = Settings(data_dir=tmp_path, database_url=url, secret_key="k")
    with TestClient(create_app(settings)) as client:
        client.headers["Authorization"] = f"Bearer {token}"
        for params, flt, sort in QUERIES:
            response = client.get(f"/api/projects/{pid}/images", params=params)
            assert response.status_code == 200, response.text
            with transaction(factory) as s:
                limit, offset = int(params.get("limit", 100)), int(params.get("offset", 0))
                total, items = list_images(s, pid, flt, sort=sort, limit=limit, offset=offset)
            assert items, params  # every query finds something to compare
            expected = ImagePage(total=total, items=items).model_dump_json()
            assert response.content == expected.encode(), params
