"""Cleaning as a team in real Chromium: two people press "next batch" in two browser contexts
and get disjoint tiles; a blind second opinion by keyboard; the owner's team page."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from api.main import create_app
from core.db import transaction
from core.ingest import Provenance, add_image
from core.projects import create_project
from core.schemas import ClassIn, ProjectIn
from core.store import LocalStore
from core.tables import ImageState, ProjectMember, Role
from core.users import create_user
from tests.conftest import migrated
from tests.imagegen import picture
from tests.services import free_port
from tests.web.artifacts import screenshot
from tests.web.test_pages import chromium_path

playwright_sync = pytest.importorskip("playwright.sync_api")

IMAGES = 30


@dataclass
class Team:
    url: str
    project_id: int


@pytest.fixture
def team(tmp_path: Path) -> Iterator[Team]:
    settings, factory = migrated(tmp_path, "k")
    store = LocalStore(tmp_path)
    with transaction(factory) as s:
        ann = create_user(s, "ann", "ann-password")
        bob = create_user(s, "bob", "bob-password")
        project = create_project(
            s,
            ProjectIn(name="Colours", classes=[ClassIn(name="red"), ClassIn(name="blue")]),
            ann.id,
        )
        s.add(ProjectMember(project_id=project.id, user_id=bob.id, role=Role.editor))
        for n in range(IMAGES):
            colour = "red" if n % 2 else "blue"
            data = picture(colour, n)
            image, _ = add_image(
                s, store, project.id, data, project.classes[n % 2].id, Provenance()
            )
            store.put(data, "thumb", sha256=image.sha256)
            image.state = ImageState.ok
        pid = project.id
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings), host="127.0.0.1", port=free_port(), log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    port = server.config.port
    yield Team(f"http://127.0.0.1:{port}", pid)
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def browser() -> Iterator[Any]:
    with playwright_sync.sync_playwright() as p:
        launched = p.chromium.launch(
            executable_path=chromium_path(), args=["--no-sandbox", "--disable-gpu"]
        )
        yield launched
        launched.close()


def _login(browser: Any, team: Team, who: str) -> Any:
    page = browser.new_context(viewport={"width": 1200, "height": 900}).new_page()
    page.goto(f"{team.url}/login")
    page.fill("input[name=username]", who)
    page.fill("input[name=password]", f"{who}-password")
    page.click("button[type=submit]")
    page.wait_for_url(f"{team.url}/")
    return page


def _tiles(page: Any) -> set[int]:
    return {int(i) for i in page.eval_on_selector_all(".tile", "ts => ts.map(t => t.dataset.id)")}


def test_two_people_take_disjoint_batches_and_check_each_other_blind(
    team: Team, browser: Any
) -> None:
    ann, bob = _login(browser, team, "ann"), _login(browser, team, "bob")
    queue = f"{team.url}/projects/{team.project_id}/review?mode=queue"
    for page in (ann, bob):
        page.goto(queue)
        page.wait_for_selector("#next-batch")
    with ann.expect_navigation():
        ann.keyboard.press("b")
    with bob.expect_navigation():
        bob.click("#next-batch")
    ann_tiles, bob_tiles = _tiles(ann), _tiles(bob)
    assert len(ann_tiles) == 20 and len(bob_tiles) == IMAGES - 20
    assert not ann_tiles & bob_tiles
    assert "20 images held" in ann.inner_text("#lease")
    screenshot(ann, "team-queue")

    # Ann relabels her first tile by keyboard (2 = blue); the owner asks for a second opinion.
    first = ann.eval_on_selector(".tile", "t => t.dataset.id")
    ann.click(f'.tile[data-id="{first}"]')
    ann.keyboard.press("2")
    ann.wait_for_selector(f'.tile[data-id="{first}"].done')
    ann.goto(f"{team.url}/projects/{team.project_id}/team")
    ann.fill("input[name=top_relabels]", "5")
    ann.click("#ask-opinions button")
    ann.wait_for_selector("#flash:has-text('1 decisions sent')")

    # Bob checks it blind: the tile carries no label, he answers red (1): a disagreement.
    bob.goto(f"{team.url}/projects/{team.project_id}/review?mode=second")
    with bob.expect_navigation():
        bob.keyboard.press("b")
    assert _tiles(bob) == {int(first)}
    assert bob.locator("#blind .label").count() == 0
    bob.keyboard.press("1")
    bob.wait_for_selector(f'.tile[data-id="{first}"].done')
    screenshot(bob, "team-second-opinion")

    ann.reload()
    rows = ann.inner_text("#people")
    assert "ann" in rows and "bob" in rows
    assert "0% (0/1)" in rows  # ann's one checked decision was not agreed with
    assert "1 disagreements to settle" in ann.inner_text("#opinions")
    screenshot(ann, "team-progress")
    ann.click("text=1 disagreements to settle")
    assert _tiles(ann) == {int(first)}

    # Leaving the queue page hands Bob's batch back at once.
    bob.goto(queue)
    bob.goto(f"{team.url}/")
    page = _login(browser, team, "ann")
    page.goto(queue)
    with page.expect_navigation():
        page.click("#next-batch")
    assert _tiles(page) & bob_tiles
