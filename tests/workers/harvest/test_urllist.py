"""fastai URL lists: parsing, and the import_urls job against a real local image server."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from core.config import Settings
from core.ingest import parse_url_list
from core.tables import Image, ImageClass, ImageState, Job
from tests.workers.harvest.server import LocalServer, Reply, Request, jpeg
from workers.harvest.urllist import import_urls_job
from workers.runner import JobCancelled, JobContext, run_job

MakeContext = Callable[..., JobContext]


def test_parse_fastai_url_file() -> None:
    text = (
        "\ufeffhttps://a.example/1.jpg\r\n\n  https://b.example/2?x=1  \n# saved by hand\n"
        "http://c.example/3.png\nnot-a-url\n"
    )
    assert parse_url_list(text) == [
        "https://a.example/1.jpg",
        "https://b.example/2?x=1",
        "http://c.example/3.png",
        "not-a-url",
    ]
    assert parse_url_list(text.encode("utf-8")) == parse_url_list(text)
    assert parse_url_list("") == []


def image(request: Request) -> Reply:
    n = int(request.path.rsplit("/", 1)[-1].split(".")[0])
    return Reply(body=jpeg(seed=n), headers={"Content-Type": "image/jpeg"})


@pytest.fixture
def server() -> Iterable[LocalServer]:
    routes = {
        "/img/": image,
        "/copy/": lambda r: Reply(body=jpeg(seed=1), headers={"Content-Type": "image/jpeg"}),
        "/html/": lambda r: Reply(body=b"<html>nope</html>", headers={"Content-Type": "text/html"}),
    }
    with LocalServer(routes) as srv:
        yield srv


def test_import_urls_job_downloads_dedupes_and_explains_failures(
    server: LocalServer, factory: sessionmaker[Session], project_id: int, job_context: MakeContext
) -> None:
    good = [f"{server.url}/img/{n}.jpg" for n in range(1, 9)]
    bad = {
        f"{server.url}/missing/1.jpg": "HTTP 404",
        f"{server.url}/html/1": "not an image",
        f"http://[::ffff:127.0.0.1]:{server.port}/img/9.jpg": "blocked address",
        "file:///etc/passwd": "blocked scheme",
    }
    items = [{"url": u, "label": "grizzly"} for u in good[:5]]
    items += [{"url": u, "label": "black"} for u in good[5:]]
    items += [{"url": f"{server.url}/copy/1.jpg", "label": "black"}]
    items += [{"url": u, "label": "teddy"} for u in bad]
    items += [{"url": good[0], "label": "black"}]
    ctx = job_context("import_urls", {"items": items})
    result = import_urls_job(ctx)

    assert (result["found"], result["downloaded"], result["duplicates"]) == (14, 8, 1)
    assert (result["failed"], result["skipped"]) == (4, 1)
    assert {f["url"]: f["reason"] for f in result["failures"]} == bad
    assert all(f["class"] == "teddy" for f in result["failures"])
    assert result["failures_by_reason"] == {reason: 1 for reason in bad.values()}
    assert result["classes"]["grizzly"]["downloaded"] == 5
    assert server.hits("/img/") == 8

    with factory() as session:
        stored = session.scalars(select(Image).where(Image.project_id == project_id)).all()
        classes = {c.id: c.name for c in session.scalars(select(ImageClass))}
        job = session.get(Job, ctx.job_id)
    assert len(stored) == 8
    by_url = {i.image_url: i for i in stored}
    assert classes[by_url[good[0]].label_id or 0] == "grizzly"
    assert (by_url[good[6]].source, by_url[good[6]].rank, by_url[good[6]].filename) == (
        "url_list",
        2,
        "7.jpg",
    )
    assert by_url[good[0]].seen_count == 2
    assert job is not None and job.message.startswith("done: found 14, downloaded 8")
    # Verified while downloading: every stored image decoded, none left pending.
    assert "; verified 8: 8 ok, 0 rejected" in job.message
    assert (result["verify"]["verified"], result["verify"]["ok"]) == (8, 8)
    assert all(i.state is ImageState.ok for i in stored)

    again = import_urls_job(job_context("import_urls", {"items": items}))
    assert (again["downloaded"], again["skipped"]) == (0, 9)
    assert server.hits("/img/") == 8


def test_import_urls_job_can_be_cancelled(
    server: LocalServer, factory: sessionmaker[Session], job_context: MakeContext
) -> None:
    items = [{"url": f"{server.url}/img/{n}.jpg", "label": "grizzly"} for n in range(50)]
    ctx = job_context("import_urls", {"items": items})
    with factory() as session, session.begin():
        session.execute(update(Job).where(Job.id == ctx.job_id).values(cancel_requested=True))
    with pytest.raises(JobCancelled):
        import_urls_job(ctx)
    assert server.hits() == 0


def test_failures_land_in_the_job_result_through_the_runner(
    server: LocalServer, settings: Settings, factory: sessionmaker[Session], project_id: int
) -> None:
    items = [
        {"url": f"{server.url}/img/1.jpg", "label": "grizzly"},
        {"url": f"{server.url}/missing.jpg", "label": "grizzly"},
    ]
    with factory() as session, session.begin():
        job = Job(project_id=project_id, kind="import_urls", params={"items": items})
        session.add(job)
        session.flush()
        job_id = job.id
    assert run_job(job_id, import_urls_job, settings) == "succeeded"
    with factory() as session:
        stored = session.get(Job, job_id)
        assert stored is not None and stored.result is not None
        assert stored.result["downloaded"] == 1
        assert stored.result["failures"] == [
            {"url": f"{server.url}/missing.jpg", "reason": "HTTP 404", "class": "grizzly"}
        ]


def test_import_without_verify_leaves_images_pending(
    server: LocalServer, factory: sessionmaker[Session], project_id: int, job_context: MakeContext
) -> None:
    items = [{"url": f"{server.url}/img/{n}.jpg", "label": "grizzly"} for n in range(1, 4)]
    ctx = job_context("import_urls", {"items": items, "verify": False})
    result = import_urls_job(ctx)

    assert result["downloaded"] == 3 and "verify" not in result
    with factory() as session:
        stored = session.scalars(select(Image).where(Image.project_id == project_id)).all()
        job = session.get(Job, ctx.job_id)
    assert [i.state for i in stored] == [ImageState.pending] * 3
    assert job is not None and job.message.startswith("done: found 3, downloaded 3")
    assert not any(ctx.store.exists(i.sha256, "normal") for i in stored)


def test_a_rerun_verifies_what_the_first_run_left_pending(
    server: LocalServer, factory: sessionmaker[Session], project_id: int, job_context: MakeContext
) -> None:
    items = [{"url": f"{server.url}/img/{n}.jpg", "label": "grizzly"} for n in range(1, 4)]
    first = job_context("import_urls", {"items": items, "verify": False})
    import_urls_job(first)
    # The same job once more, as a redelivered task runs it: nothing to fetch, all to verify.
    again = JobContext(
        first.job_id, project_id, {"items": items}, first.settings, first.store, factory
    )
    result = import_urls_job(again)

    assert (result["skipped"], result["downloaded"]) == (3, 0)
    assert (result["verify"]["verified"], result["verify"]["ok"]) == (3, 3)
    assert server.hits("/img/") == 3
