"""The harvest job end to end: real Chromium against the local fake engine, real downloads."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from core.config import Settings
from core.tables import Image, ImageClass, ImageState, Job, SearchQuery
from tests.workers.harvest.fake_engine import FakeEngine
from workers.harvest.job import harvest_job
from workers.runner import JobCancelled, JobContext
from workers.verify.job import verify_job

MakeContext = Callable[..., JobContext]


def add_class(
    factory: sessionmaker[Session],
    project_id: int,
    name: str,
    query: str,
    negatives: list[str] | None = None,
) -> int:
    with factory() as session, session.begin():
        cls = ImageClass(project_id=project_id, name=name)
        cls.queries.append(SearchQuery(text=query, negative_terms=negatives or []))
        session.add(cls)
        session.flush()
        return cls.id


def images(factory: sessionmaker[Session], project_id: int) -> list[Image]:
    with factory() as session:
        return list(
            session.scalars(
                select(Image).where(Image.project_id == project_id).order_by(Image.rank)
            )
        )


def test_bing_harvest_stores_provenance_and_reruns_without_duplicates(
    browser_settings: Settings,
    fake_engine: FakeEngine,
    factory: sessionmaker[Session],
    project_id: int,
    job_context: MakeContext,
) -> None:
    class_id = add_class(factory, project_id, "grizzly", "grizzly bear", ["dog", "-arctos"])
    params = {"engines": ["bing"], "max_per_class": 45}
    ctx = job_context("harvest", params)
    result = harvest_job(ctx)

    # 35 rendered by the page's JavaScript, then /images/async from 36 up to the limit.
    assert result["searches"] == [
        {
            "class": "grizzly",
            "engine": "bing",
            "query": "grizzly bear -dog -arctos",
            "found": 45,
            "too_small": 0,
            "stopped": "limit reached",
        }
    ]
    [search] = [r for r in fake_engine.requests if r.path == "/images/search"]
    assert search.query == {
        "q": "grizzly bear -dog -arctos",
        "adlt": "strict",
        "form": "HDRSC2",
        "first": "1",
    }
    assert {r.query.get("first") for r in fake_engine.requests if r.path == "/images/async"} >= {
        "1",
        "36",
    }
    # Results 10, 20, 30, 40 are HTML pages; 4 has the bytes of 3.
    assert (result["found"], result["downloaded"], result["duplicates"], result["failed"]) == (
        45,
        40,
        1,
        4,
    )
    assert result["failures_by_reason"] == {"not an image": 4}
    assert {f["url"] for f in result["failures"]} == {
        fake_engine.image_url("grizzly bear -dog -arctos", n) for n in (10, 20, 30, 40)
    }
    assert result["classes"]["grizzly"]["downloaded"] == 40

    stored = images(factory, project_id)
    assert len(stored) == 40
    first = stored[0]
    assert (first.source, first.engine, first.rank, first.label_id) == (
        "search",
        "bing",
        1,
        class_id,
    )
    # Verified while downloading: decoded, normalised copy and thumbnail written.
    assert first.query == "grizzly bear -dog -arctos" and first.state is ImageState.ok
    assert all(i.state is ImageState.ok and i.width and i.phash for i in stored)
    assert ctx.store.exists(first.sha256, "normal") and ctx.store.exists(first.sha256, "thumb")
    assert (result["verify"]["verified"], result["verify"]["ok"]) == (40, 40)
    assert first.image_url == fake_engine.image_url(first.query, 1)
    assert first.page_url == f"{fake_engine.url}/page/1" and first.thumbnail_url and first.title
    assert (first.http_status, first.content_type, first.filename) == (200, "image/jpeg", "1.jpg")
    assert (
        first.fetched_at is not None and first.harvest_job_id == ctx.job_id and first.file_size > 0
    )
    # Results 3 and 4 download concurrently: whichever lands first is the stored row.
    assert next(i for i in stored if i.rank in (3, 4)).seen_count == 2

    with factory() as session:
        job = session.get(Job, ctx.job_id)
        assert job is not None and "downloaded 40" in job.message

    fetched_before = fake_engine.hits("/img/")
    again = harvest_job(job_context("harvest", params))
    assert (again["downloaded"], again["skipped"], again["duplicates"], again["failed"]) == (
        0,
        40,
        1,
        4,
    )
    assert len(images(factory, project_id)) == 40
    assert again["verify"]["verified"] == 0
    # Only the URLs that gave no new row are fetched again: 4 failures and the duplicate.
    assert fake_engine.hits("/img/") - fetched_before == 5


def test_duckduckgo_scrolls_filters_small_and_walls_end_with_a_reason(
    browser_settings: Settings,
    fake_engine: FakeEngine,
    factory: sessionmaker[Session],
    project_id: int,
    job_context: MakeContext,
) -> None:
    add_class(factory, project_id, "black", "black bear")
    add_class(factory, project_id, "teddy", "teddy captcha")
    add_class(factory, project_id, "panda", "panda ratelimit")
    params = {"engines": ["duckduckgo", "bing"], "max_per_class": 200, "min_width": 200}
    result = harvest_job(job_context("harvest", params))

    searches = {(s["class"], s["engine"]): s for s in result["searches"]}
    black_ddg = searches["black", "duckduckgo"]
    # 50 results over three i.js answers fetched on scroll; every 5th reported 120x90.
    assert (black_ddg["found"], black_ddg["too_small"], black_ddg["stopped"]) == (
        40,
        10,
        "no more results",
    )
    assert fake_engine.hits("/i.js") >= 3
    # Bing's copies of the same URLs are not counted twice; it adds the 10 it has no size for.
    assert (searches["black", "bing"]["found"], searches["black", "bing"]["stopped"]) == (
        10,
        "no more results",
    )
    for engine in ("duckduckgo", "bing"):
        teddy = searches["teddy", engine]
        assert teddy["found"] == 0 and teddy["stopped"].startswith("blocked: CAPTCHA")
    assert searches["panda", "duckduckgo"]["stopped"].startswith("blocked: HTTP 403")
    assert searches["panda", "bing"]["found"] == 50

    assert result["classes"]["black"]["found"] == 50
    assert result["classes"]["panda"]["downloaded"] == 44
    assert "teddy" not in result["classes"]
    assert len(images(factory, project_id)) == 88
    # Bing reports no sizes: its small results are downloaded, then held to min_width when
    # verified (5 for black bear, 5 for panda; the other small ones are HTML pages).
    assert result["verify"]["rejected_by_reason"] == {"too small": 10}
    small = [i for i in images(factory, project_id) if i.state is ImageState.rejected]
    assert {(i.engine, i.width, i.reject_reason) for i in small} == {("bing", 120, "too small")}
    # A later recheck holds each image to the minimum of the harvest that brought it in.
    again = verify_job(job_context("verify", {"recheck": True}))
    assert again["rejected_by_reason"] == {"too small": 10}


def test_cancel_stops_the_harvest(
    browser_settings: Settings,
    factory: sessionmaker[Session],
    project_id: int,
    job_context: MakeContext,
) -> None:
    add_class(factory, project_id, "grizzly", "grizzly bear")
    ctx = job_context("harvest", {"engines": ["bing"]})
    with factory() as session, session.begin():
        session.execute(update(Job).where(Job.id == ctx.job_id).values(cancel_requested=True))
    with pytest.raises(JobCancelled):
        harvest_job(ctx)
    assert images(factory, project_id) == []


def test_nothing_to_harvest_is_a_clear_error(job_context: MakeContext) -> None:
    with pytest.raises(ValueError, match="no class has search queries"):
        harvest_job(job_context("harvest", {}))
