"""Hardening of what the server sends: security headers, no inline code, safe CSV cells,
API docs without a CDN."""

from __future__ import annotations

import csv
import io
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import pytest
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

TEMPLATES = Path(__file__).resolve().parents[2] / "web" / "templates"
FORMULA = '=HYPERLINK("http://evil.example","x")'
CLIMBER = "../../escape"


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[TestClient, int]]:
    settings, factory = migrated(tmp_path, "k")
    store = image_store(settings)
    with transaction(factory) as s:
        user = create_user(s, "ann", "ann-password")
        project = create_project(
            s,
            ProjectIn(name="p", classes=[ClassIn(name=n) for n in (FORMULA, "-2+3", CLIMBER)]),
            user.id,
        )
        for n, cls in enumerate(project.classes):
            data = picture("red", n)
            image, _ = add_image(s, store, project.id, data, cls.id, Provenance())
            store.put(data, "normal", sha256=image.sha256)
            image.state = ImageState.ok
        pid = project.id
    with TestClient(create_app(settings)) as client:
        client.post("/api/auth/login", json={"username": "ann", "password": "ann-password"})
        yield client, pid


def test_every_page_carries_a_strict_content_security_policy(
    site: tuple[TestClient, int],
) -> None:
    client, pid = site
    for path in (
        "/login",
        "/",
        f"/projects/{pid}",
        f"/projects/{pid}/review",
        f"/projects/{pid}/history",
        f"/projects/{pid}/members",
        "/tokens",
        "/api/docs",
    ):
        response = client.get(path)
        assert response.status_code == 200, path
        csp = response.headers["content-security-policy"]
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp, path
        assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp, path
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "same-origin"


def test_no_template_has_inline_script_handler_or_style() -> None:
    inline = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>|\son[a-z]+\s*=|\sstyle\s*=|<style", re.I)
    found = {
        path.name: inline.findall(path.read_text())
        for path in TEMPLATES.glob("*.html")
        if inline.search(path.read_text())
    }
    assert found == {}


def test_downloads_keep_nosniff_and_json_gets_no_page_policy(site: tuple[TestClient, int]) -> None:
    client, pid = site
    response = client.get(f"/api/projects/{pid}/export/cleaned.csv")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "content-security-policy" not in client.get("/api/health").headers


def test_cleaned_csv_never_starts_a_cell_with_a_formula(site: tuple[TestClient, int]) -> None:
    client, pid = site
    rows = list(csv.reader(io.StringIO(client.get(f"/api/projects/{pid}/export/cleaned.csv").text)))
    cells = [cell for row in rows[1:] for cell in row]
    assert len(rows) == 4 and cells
    assert not [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")]
    labels = {row[1] for row in rows[1:]}
    assert labels == {"'" + FORMULA, "'-2+3", CLIMBER}
    # The name column is <class folder>/<file>, the folder neutralised as the label is.
    for name, label in rows[1:]:
        assert len(PurePosixPath(name).parts) == 2 and name[0] == label[0], (name, label)


def test_the_archive_keeps_every_class_folder_inside_it(site: tuple[TestClient, int]) -> None:
    client, pid = site
    archive = zipfile.ZipFile(
        io.BytesIO(client.get(f"/api/projects/{pid}/export/imagefolder.zip").content)
    )
    members = set(archive.namelist()) - {"cleaned.csv"}
    assert len(members) == 3
    for name in members:
        parts = PurePosixPath(name).parts
        assert len(parts) == 2 and ".." not in parts and "\\" not in name, name
    rows = list(csv.reader(io.StringIO(archive.read("cleaned.csv").decode())))
    assert {row[0] for row in rows[1:]} == members


def test_api_docs_load_nothing_from_other_hosts(site: tuple[TestClient, int]) -> None:
    client, _ = site
    page = client.get("/api/docs").text
    assert "http://" not in page and "https://" not in page
    for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', page):
        assert client.get(asset).status_code == 200, asset
