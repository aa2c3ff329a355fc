"""The web pages in real Chromium (Playwright) against a real server on 127.0.0.1."""

from __future__ import annotations

import os
import random
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from api.main import create_app
from core.config import Settings
from core.db import transaction
from core.ingest import Provenance, add_image
from core.projects import create_project
from core.schemas import ClassIn, ProjectIn
from core.store import LocalStore
from core.tables import Image, ImageState, LabelEvent, ProjectMember, Role, User
from core.users import create_user
from tests.conftest import migrated
from tests.imagegen import picture
from tests.services import free_port
from tests.web.artifacts import screenshot

playwright_sync = pytest.importorskip("playwright.sync_api")


def chromium_path() -> str | None:
    configured = os.environ.get("WINNOW_CHROMIUM")
    if configured:
        return configured
    return shutil.which("chromium") or shutil.which("chromium-browser")


@dataclass
class Site:
    url: str
    factory: sessionmaker[Session]
    project_id: int
    image_ids: list[int]


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    settings, factory = migrated(tmp_path, "k")
    store = LocalStore(tmp_path)
    with transaction(factory) as s:
        user = create_user(s, "ann", "ann-password")
        project = create_project(
            s,
            ProjectIn(name="Colours", classes=[ClassIn(name="red"), ClassIn(name="blue")]),
            user.id,
        )
        ids = []
        for n in range(6):
            data = picture("red", n)
            image, _ = add_image(s, store, project.id, data, project.classes[0].id, Provenance())
            store.put(data, "thumb", sha256=image.sha256)
            store.put(data, "normal", sha256=image.sha256)
            image.state = ImageState.ok
            ids.append(image.id)
        pid = project.id
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield Site(f"http://127.0.0.1:{port}", factory, pid, ids)
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def page(site: Site) -> Iterator[object]:
    executable = chromium_path()
    if executable is None and not os.environ.get("CI"):
        pytest.skip("no Chromium here (install Debian's chromium or `playwright install chromium`)")
    with playwright_sync.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=executable,
            args=[
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-gpu",
                "--no-sandbox",
            ],
        )
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(f"{site.url}/")
        page.fill("input[name=username]", "ann")
        page.fill("input[name=password]", "ann-password")
        page.click("button[type=submit]")
        page.wait_for_url(f"{site.url}/")
        yield page
        browser.close()


def _image(site: Site, image_id: int) -> Image:
    with transaction(site.factory) as s:
        image = s.get(Image, image_id)
        assert image is not None
        return image


def test_login_and_create_project(site: Site, page) -> None:
    assert "Colours" in page.inner_text("table")
    page.fill("#new-project input[name=name]", "Bears")
    page.fill("#new-project textarea", "grizzly: grizzly bear -arctos\nblack: black bear")
    page.click("#new-project button")
    page.wait_for_selector("h1:has-text('Bears')")
    text = page.inner_text("ul.classes")
    assert "grizzly" in text and "-arctos" in text and "black bear" in text


def test_review_with_the_keyboard(site: Site, page) -> None:
    page.goto(f"{site.url}/projects/{site.project_id}/review?state=ok&sort=id")
    page.wait_for_selector(".tile.selected")
    first, second = site.image_ids[0], site.image_ids[1]

    page.keyboard.press("2")  # relabel the first image as class 2 (blue), move on
    page.wait_for_selector(f'.tile[data-id="{first}"].done')
    assert _image(site, first).label_id is not None
    page.keyboard.press("d")  # delete the second
    page.wait_for_selector(f'.tile[data-id="{second}"].state-deleted')
    assert _image(site, second).state is ImageState.deleted
    page.keyboard.press("u")  # undo the delete
    page.wait_for_selector(f'.tile[data-id="{second}"].state-ok')
    assert _image(site, second).state is ImageState.ok

    with transaction(site.factory) as s:
        actions = s.scalars(select(LabelEvent.action).order_by(LabelEvent.id)).all()
        sources = set(s.scalars(select(LabelEvent.source)).all())
    assert list(actions) == ["relabel", "delete", "undo"]
    assert sources == {"ui", "api"}


def test_a_stale_tile_shows_the_other_reviewers_change(site: Site, page) -> None:
    page.goto(f"{site.url}/projects/{site.project_id}/review?state=ok&sort=id")
    page.wait_for_selector(".tile.selected")
    target = site.image_ids[0]
    # Another reviewer deletes the image behind this page's back.
    with transaction(site.factory) as s:
        image = s.get(Image, target)
        assert image is not None
        image.state = ImageState.deleted
    page.keyboard.press("k")
    page.wait_for_selector(f'.tile[data-id="{target}"].conflict')
    assert "changed by someone else" in page.inner_text("#flash")
    assert "deleted" in page.inner_text(f'.tile[data-id="{target}"] .state')


def test_history_lists_and_undoes(site: Site, page) -> None:
    page.goto(f"{site.url}/projects/{site.project_id}/review?state=ok&sort=id")
    page.wait_for_selector(".tile.selected")
    page.keyboard.press("d")
    page.wait_for_selector(".tile.state-deleted")
    page.goto(f"{site.url}/projects/{site.project_id}/history")
    page.wait_for_selector("#history tbody tr")
    assert "delete" in page.inner_text("#history")
    page.click("#history tbody tr button")
    page.wait_for_selector("#history tbody tr:nth-child(2)")
    assert _image(site, site.image_ids[0]).state is ImageState.ok


def test_api_docs_render_offline_and_pages_break_no_content_policy(site: Site, page) -> None:
    violations: list[str] = []
    page.on(
        "console", lambda m: violations.append(m.text) if "Content Security" in m.text else None
    )
    # Everything off this machine is cut: the docs must come from the vendored bundle.
    page.route(
        "**/*",
        lambda route: (
            route.continue_() if route.request.url.startswith(site.url) else route.abort()
        ),
    )
    page.goto(f"{site.url}/api/docs")
    page.wait_for_selector(".opblock", timeout=15_000)
    assert page.locator(".opblock").count() > 20
    for path in ("/", f"/projects/{site.project_id}", f"/projects/{site.project_id}/review"):
        page.goto(f"{site.url}{path}")
        page.wait_for_load_state("networkidle")
    assert violations == []


def test_an_owner_shares_the_project_and_makes_a_token_in_the_browser(site: Site, page) -> None:
    with transaction(site.factory) as s:
        create_user(s, "bob", "bob-password")
    page.goto(f"{site.url}/projects/{site.project_id}")
    page.click("nav.tabs a:has-text('Members')")
    page.fill("[data-member-invite] input[name=username]", "bob")
    page.select_option("[data-member-invite] select[name=role]", "editor")
    page.click("[data-member-invite] button")
    page.wait_for_selector("tr[data-username=bob]")
    page.select_option("tr[data-username=bob] select", "viewer")
    page.wait_for_selector("#flash:has-text('bob is now viewer')")
    with transaction(site.factory) as s:
        bob = s.scalar(select(User).where(User.username == "bob"))
        assert bob is not None
        member = s.get(ProjectMember, (site.project_id, bob.id))
        assert member is not None and member.role is Role.viewer

    page.click("header a:has-text('Tokens')")
    page.fill("[data-token-create] input[name=name]", "ci")
    page.fill("[data-token-create] input[name=expires_in_days]", "30")
    page.click("[data-token-create] button")
    token = page.wait_for_selector("#new-token code").inner_text()
    me = httpx.get(f"{site.url}/api/users/me", headers={"Authorization": f"Bearer {token}"})
    assert me.json()["username"] == "ann"
    assert "ci" in page.inner_text("table.tokens")
    page.click("table.tokens [data-token-revoke]")
    page.wait_for_selector("table.tokens [data-token-revoke]", state="detached")
    revoked = httpx.get(f"{site.url}/api/users/me", headers={"Authorization": f"Bearer {token}"})
    assert revoked.status_code == 401


@pytest.mark.slow
def test_the_predict_page_shows_top_classes_for_two_models_side_by_side(
    site: Site, page, tmp_path: Path
) -> None:
    from tests.workers.training.conftest import add_labelled, synth_jpeg
    from workers.runner import local_job
    from workers.train import train_job

    settings = Settings(data_dir=tmp_path, secret_key="k")
    add_labelled(site.factory, LocalStore(tmp_path), site.project_id, 8, ("red", "blue"))
    params = {"pretrained": False, "image_size": 32, "batch_size": 8, "epochs": 1, "lr": 5e-3}
    first, second = (
        train_job(local_job(site.factory, settings, site.project_id, "train", params))[
            "model_version_id"
        ]
        for _ in range(2)
    )
    picture_file = tmp_path / "bear.jpg"
    picture_file.write_bytes(synth_jpeg(0, random.Random(3), 48))

    page.goto(f"{site.url}/projects/{site.project_id}/models/{second}")
    page.click("a:has-text('Try it on your images')")
    page.set_input_files("[data-predict] input[type=file]", str(picture_file))
    page.select_option("[data-predict] select[name=compare]", str(first))
    page.click("[data-predict] button")
    page.wait_for_selector("figure.predicted .prediction >> nth=1")
    columns = page.locator("figure.predicted .prediction")
    assert columns.nth(0).locator("h3").inner_text() == f"model {second}"
    assert columns.nth(1).locator("h3").inner_text() == f"model {first}"
    for n in range(2):
        labels = columns.nth(n).locator(".class span:first-child").all_inner_texts()
        assert sorted(labels) == ["blue", "red"]
    screenshot(page, "predict-compare")


@pytest.mark.slow
def test_the_model_page_compares_two_versions_on_their_shared_validation_images(
    site: Site, page, tmp_path: Path
) -> None:
    from tests.workers.training.conftest import add_labelled
    from workers.runner import local_job
    from workers.train import train_job

    settings = Settings(data_dir=tmp_path, secret_key="k")
    add_labelled(site.factory, LocalStore(tmp_path), site.project_id, 8, ("red", "blue"))
    params = {"pretrained": False, "image_size": 32, "batch_size": 8, "epochs": 1, "lr": 5e-3}
    first, second = (
        train_job(local_job(site.factory, settings, site.project_id, "train", params))[
            "model_version_id"
        ]
        for _ in range(2)
    )
    page.goto(f"{site.url}/projects/{site.project_id}/models/{second}")
    page.select_option("form.compare-with select[name=other]", str(first))
    page.click("form.compare-with button")
    page.wait_for_url(f"**/models/{second}/compare?other={first}")
    assert "on the same" in page.inner_text(".verdict")
    assert page.locator("table.confusion").count() == 2
    screenshot(page, "compare")


def test_bulk_relabel_by_keyboard_reports_the_tile_someone_else_changed(site: Site, page) -> None:
    page.goto(f"{site.url}/projects/{site.project_id}/review?state=ok&sort=id")
    page.wait_for_selector(".tile.selected")
    first, second, third = site.image_ids[:3]
    for _ in range(3):  # mark three tiles with x, moving right
        page.keyboard.press("x")
        page.keyboard.press("ArrowRight")
    assert page.locator(".tile.marked").count() == 3
    assert "3 marked" in page.inner_text("#marks")
    with transaction(site.factory) as s:  # another reviewer deletes the second meanwhile
        image = s.get(Image, second)
        assert image is not None
        image.state = ImageState.deleted
    page.keyboard.press("2")  # relabel every marked image as blue
    page.wait_for_selector(f'.tile[data-id="{second}"].conflict')
    assert "2 changed; 1 changed by someone else" in page.inner_text("#flash")
    blue = _image(site, first).label_id
    assert blue is not None and _image(site, third).label_id == blue
    assert _image(site, second).label_id != blue
    assert page.locator(".tile.marked").count() == 1  # the conflict stays marked

    page.keyboard.press("Escape")
    page.keyboard.press("a")  # the whole page, then keep
    assert page.locator(".tile.marked").count() == len(site.image_ids)
    page.keyboard.press("k")
    page.wait_for_selector(".tile.marked", state="detached")
    with transaction(site.factory) as s:
        kept = s.scalars(select(LabelEvent.image_id).where(LabelEvent.action == "keep")).all()
        sources = set(s.scalars(select(LabelEvent.source)).all())
    # The conflicting tile now shows the other reviewer's version, so keeping it applies.
    assert sorted(kept) == sorted(site.image_ids)
    assert sources == {"bulk"}
