"""The lesson in the browser: real Chromium against a live server with a real worker process.

One server, one worker and one browser serve the module; each test opens its own browser
contexts (one per person). Every page visited is screenshotted into test-artifacts/web/.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from api.main import create_app
from core.config import Settings
from core.db import make_engine, make_session_factory, transaction
from core.migrate import upgrade
from core.tables import Image, ImageClass, LabelEvent, User
from core.users import create_user
from tests.imagegen import imagefolder_zip, picture
from tests.services import WorkerProcess, free_port
from tests.web.artifacts import screenshot
from tests.web.test_pages import chromium_path

playwright_sync = pytest.importorskip("playwright.sync_api")

# A server, a worker that trains, and Chromium: tens of seconds.
pytestmark = [pytest.mark.slow, pytest.mark.browser]

JOB_TIMEOUT = 240_000  # ms: a worker starting on a busy machine, then a tiny training run


@dataclass
class Live:
    url: str
    factory: sessionmaker[Session]
    worker: WorkerProcess
    browser: Any


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    executable = chromium_path()
    if executable is None and not os.environ.get("CI"):
        pytest.skip("no Chromium here (install Debian's chromium or `playwright install chromium`)")
    root = tmp_path_factory.mktemp("lesson")
    data_dir = root / "data"
    data_dir.mkdir()
    env = {
        "WINNOW_DATA_DIR": str(data_dir),
        "WINNOW_DATABASE_URL": f"sqlite:///{data_dir / 'winnow.sqlite'}",
        "WINNOW_BROKER_URL": f"sqla+sqlite:///{data_dir / 'broker.sqlite'}",
        "WINNOW_SECRET_KEY": "lesson-secret",
    }
    settings = Settings(
        data_dir=data_dir,
        database_url=env["WINNOW_DATABASE_URL"],
        broker_url=env["WINNOW_BROKER_URL"],
        secret_key="lesson-secret",
    )
    upgrade(settings.db_url)
    engine = make_engine(settings.db_url)
    factory = make_session_factory(engine)
    with transaction(factory) as s:
        create_user(s, "ann", "ann-password", is_admin=True)
        create_user(s, "bob", "bob-password")
    worker = WorkerProcess(env, root / "worker.log")
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
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
            yield Live(f"http://127.0.0.1:{port}", factory, worker, browser)
            browser.close()
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        worker.stop()
        engine.dispose()


def _person(live: Live, username: str) -> Any:
    """A browser context of its own (cookies, storage), logged in through the login page."""
    context = live.browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto(f"{live.url}/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", f"{username}-password")
    page.click("button[type=submit]")
    page.wait_for_url(f"{live.url}/")
    return page


def _wait_job(live: Live, page: Any, title: str) -> None:
    """Until the jobs panel shows the newest job of that kind as succeeded."""
    deadline = time.monotonic() + JOB_TIMEOUT / 1000
    row = page.locator(f"#jobs tbody tr:has(td:text-is('{title}'))").first
    while time.monotonic() < deadline:
        if row.count() and "job-succeeded" in (row.get_attribute("class") or ""):
            return
        if row.count() and "job-failed" in (row.get_attribute("class") or ""):
            raise AssertionError(f"{title} failed: {row.inner_text()}")
        assert live.worker.alive(), live.worker.log()[-4000:]
        time.sleep(0.5)
    raise AssertionError(f"{title} did not finish:\n{live.worker.log()[-4000:]}")


def _label_of(live: Live, image_id: int) -> str | None:
    with transaction(live.factory) as s:
        image = s.get(Image, image_id)
        assert image is not None
        label = s.get(ImageClass, image.label_id) if image.label_id else None
        return label.name if label else None


def _others_changes(url: str) -> bool:
    """The review page's poll for changes made by others since the last one it saw."""
    return "/events?" in url and "after=" in url


def test_from_a_zip_to_a_prediction_then_a_colleague_reviews_beside_the_owner(
    live: Live, tmp_path: Path
) -> None:
    ann = _person(live, "ann")
    screenshot(ann, "projects")
    ann.fill("#new-project input[name=name]", "Colours")
    ann.fill("#new-project textarea", "red: red things\nblue: blue things")
    ann.click("#new-project button")
    ann.wait_for_selector("h1:has-text('Colours')")
    project_url = ann.url

    # Upload a zip (verified as it is imported), verify again, train a tiny model.
    archive = tmp_path / "colours.zip"
    archive.write_bytes(imagefolder_zip({"red": 12, "blue": 12}))
    ann.set_input_files("form[data-field=file] input[type=file]", str(archive))
    ann.click("form[data-field=file] button")
    ann.wait_for_selector("#flash:has-text('queued')")
    _wait_job(live, ann, "Import zip")
    ann.click("form[data-kind=verify] button")
    _wait_job(live, ann, "Verify")
    train = ann.locator("form[data-kind=train]")
    train.locator("input[name=pretrained]").uncheck()
    train.locator("input[name=epochs]").fill("1")
    train.locator("input[name=image_size]").fill("32")
    train.locator("input[name=lr]").fill("0.005")
    train.locator("button").click()
    _wait_job(live, ann, "Train")
    ann.goto(project_url)
    ann.wait_for_selector("table.balance")
    screenshot(ann, "project")

    # The model page: curves in place, confusion matrix; then the predict page.
    ann.click("#jobs a:has-text('model')")
    ann.wait_for_selector("table.confusion")
    assert ann.locator(".curves[hx-trigger]").count() == 0  # done training: no polling
    screenshot(ann, "model")
    ann.click("a:has-text('Try it on your images')")
    picture_file = tmp_path / "which.jpg"
    picture_file.write_bytes(picture("red", 500))
    ann.set_input_files("[data-predict] input[type=file]", str(picture_file))
    ann.click("[data-predict] button")
    ann.wait_for_selector("figure.predicted .prediction img.heatmap")
    labels = ann.locator("figure.predicted .prediction .class span:first-child").all_inner_texts()
    assert sorted(labels) == ["blue", "red"]
    screenshot(ann, "predict")

    # Share the project with bob, as an editor.
    ann.goto(f"{project_url}/members")
    ann.fill("[data-member-invite] input[name=username]", "bob")
    ann.select_option("[data-member-invite] select[name=role]", "editor")
    ann.click("[data-member-invite] button")
    ann.wait_for_selector("tr[data-username=bob]")
    screenshot(ann, "members")

    # Bob, in a browser of his own, relabels the first image by keyboard.
    bob = _person(live, "bob")
    review = f"{project_url}/review?state=ok&sort=id"
    bob.goto(review)
    bob.wait_for_selector(".tile.selected")
    tiles = bob.locator(".tile")
    ids = [int(tiles.nth(n).get_attribute("data-id") or 0) for n in range(4)]
    before = _label_of(live, ids[0])
    other = "blue" if before == "red" else "red"
    bob.keyboard.press("2" if other == "blue" else "1")
    bob.wait_for_selector(f'.tile[data-id="{ids[0]}"].done')
    assert _label_of(live, ids[0]) == other
    screenshot(bob, "review-bob")

    # Both on the second image: bob deletes it; ann's page has not heard of that yet (her
    # poll for others' changes is held back), so her keep meets bob's change: a conflict.
    ann.route(_others_changes, lambda route: route.abort())
    ann.goto(review)
    ann.wait_for_selector(".tile.selected")
    ann.keyboard.press("ArrowRight")
    bob.keyboard.press("d")
    bob.wait_for_selector(f'.tile[data-id="{ids[1]}"].state-deleted')
    ann.keyboard.press("k")
    ann.wait_for_selector(f'.tile[data-id="{ids[1]}"].conflict')
    assert "changed by someone else" in ann.inner_text("#flash")
    assert "deleted" in ann.inner_text(f'.tile[data-id="{ids[1]}"] .state')
    screenshot(ann, "review-conflict")
    ann.unroute(_others_changes)

    # Bob marks a range with shift-click and relabels all of it with one key.
    bob.click(f'.tile[data-id="{ids[2]}"]')
    bob.click(f'.tile[data-id="{ids[3]}"]', modifiers=["Shift"])
    assert bob.locator(".tile.marked").count() == 2
    bob.keyboard.press("1")
    bob.wait_for_selector("#flash:has-text('2 changed')")
    assert _label_of(live, ids[2]) == _label_of(live, ids[3]) == "red"
    # ... and with the mouse: ctrl-click marks one tile, a button acts on the marked ones.
    bob.click(f'.tile[data-id="{ids[3]}"]', modifiers=["Control"])
    bob.click("#bulk [data-bulk=keep]")
    bob.wait_for_selector("#flash:has-text('1 changed')")
    assert bob.locator("#bulk").is_hidden()
    with transaction(live.factory) as s:
        bob_id = s.scalar(select(User.id).where(User.username == "bob"))
        bobs = s.execute(
            select(LabelEvent.image_id, LabelEvent.action, LabelEvent.source)
            .where(LabelEvent.user_id == bob_id)
            .order_by(LabelEvent.id)
        ).all()
    assert [tuple(row) for row in bobs] == [
        (ids[0], "relabel", "ui"),
        (ids[1], "delete", "ui"),
        (ids[2], "relabel", "bulk"),
        (ids[3], "relabel", "bulk"),
        (ids[3], "keep", "bulk"),
    ]

    ann.goto(f"{project_url}/history")
    ann.wait_for_selector("#history tbody tr")
    assert "bob" in ann.inner_text("#history")
    screenshot(ann, "history")
    ann.context.close()
    bob.context.close()


def test_a_class_named_like_markup_opens_no_dialog_on_any_page(live: Live, tmp_path: Path) -> None:
    name = "<img src=x onerror=alert(1)>"
    ann = _person(live, "ann")
    dialogs: list[str] = []

    def record(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    ann.on("dialog", record)
    ann.fill("#new-project input[name=name]", "Markup")
    ann.fill("#new-project textarea", f"{name}\nplain")
    ann.click("#new-project button")
    ann.wait_for_selector("h1:has-text('Markup')")
    project_url = ann.url
    assert name in ann.inner_text("ul.classes")  # shown as text, not made an element
    shot = tmp_path / "x.jpg"
    shot.write_bytes(picture("green", 1))
    upload = ann.locator("form[data-field=files]:has(select[name=label])")
    upload.locator("input[type=file]").set_input_files(str(shot))
    upload.locator("select[name=label]").select_option(name)
    upload.locator("button").click()
    ann.wait_for_selector("#flash:has-text('Added 1')")
    _wait_job(live, ann, "Verify")
    for path in ("/", "", "/review?state=all", "/history", "/members"):
        ann.goto(f"{project_url}{path}" if path != "/" else f"{live.url}/")
        ann.wait_for_load_state("networkidle")
    ann.goto(f"{project_url}/review?state=all")
    ann.wait_for_selector(".tile.selected")
    assert name in ann.inner_text(".tile .label")
    screenshot(ann, "review-markup")
    assert dialogs == []
    ann.context.close()


def test_an_admin_creates_and_disables_a_user_and_makes_a_token(live: Live) -> None:
    ann = _person(live, "ann")
    ann.click("header a:has-text('Users')")
    ann.fill("[data-user-create] input[name=username]", "carl")
    ann.fill("[data-user-create] input[name=password]", "carl-password")
    ann.click("[data-user-create] button")
    ann.wait_for_selector("tr[data-username=carl]")
    ann.click("tr[data-username=carl] [data-user-active]")
    ann.wait_for_selector("tr[data-username=carl].disabled")
    with transaction(live.factory) as s:
        carl = s.scalar(select(User).where(User.username == "carl"))
        assert carl is not None and not carl.is_active
    screenshot(ann, "users")

    ann.click("header a:has-text('Tokens')")
    ann.fill("[data-token-create] input[name=name]", "scripts")
    ann.click("[data-token-create] button")
    assert ann.wait_for_selector("#new-token code").inner_text().startswith("wn_")
    screenshot(ann, "tokens")
    ann.context.close()


def test_the_api_docs_render_their_operations_with_the_network_blocked(live: Live) -> None:
    context = live.browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    outside: list[str] = []

    def only_this_machine(route: Any) -> None:
        if route.request.url.startswith("http://127.0.0.1:"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", only_this_machine)
    page.goto(f"{live.url}/login")
    screenshot(page, "login")
    page.goto(f"{live.url}/api/docs")
    page.wait_for_selector(".opblock", timeout=15_000)
    assert page.locator(".opblock").count() > 20
    assert outside == []
    screenshot(page, "api-docs")
    context.close()
