"""The harvest job: search each class's queries in a real browser, then download the results.

Two phases. First one headless Chromium runs every (query, engine) search of every class
and collects candidate URLs with their provenance; then the browser is closed and the
shared intake downloads them concurrently, skipping URLs the project already has, so a
rerun or a redelivered task adds no rows and fetches nothing twice.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from core.ingest import Provenance
from core.params import HarvestParams
from core.tables import ImageClass
from workers.harvest.browser import browser_context
from workers.harvest.engines import ENGINES, compose_query
from workers.harvest.intake import Candidate, download_all, filename_from_url
from workers.harvest.search import run_search
from workers.harvest.ssrf import AddressPolicy, Guard
from workers.harvest.tally import Tally
from workers.runner import JobContext
from workers.verify.streaming import Verifier, verifying_import


@dataclass
class ClassPlan:
    class_id: int
    name: str
    queries: list[str]


def plan_classes(session: Session, project_id: int, class_ids: list[int] | None) -> list[ClassPlan]:
    """Classes to search with their composed queries.

    Without ``class_ids``: every class that has queries. A class asked for by id but
    without queries is searched by its name, as the lesson does.
    """
    stmt = (
        select(ImageClass)
        .where(ImageClass.project_id == project_id)
        .options(selectinload(ImageClass.queries))
        .order_by(ImageClass.id)
    )
    if class_ids is not None:
        stmt = stmt.where(ImageClass.id.in_(class_ids))
    plans = []
    for cls in session.scalars(stmt):
        queries = [compose_query(q.text, list(q.negative_terms or [])) for q in cls.queries]
        if not queries and class_ids is not None:
            queries = [cls.name]
        if queries:
            plans.append(ClassPlan(cls.id, cls.name, list(dict.fromkeys(queries))))
    return plans


def harvest_job(ctx: JobContext) -> dict[str, Any]:
    params = HarvestParams.model_validate(ctx.params)
    with ctx.session() as session:
        plans = plan_classes(session, ctx.project_id, params.class_ids)
    if not plans:
        raise ValueError(
            "nothing to harvest: no class has search queries (add queries or pass class_ids)"
        )
    tally = Tally()
    candidates = asyncio.run(_search(ctx, params, plans, tally))

    def work(verifier: Verifier | None) -> dict[str, Any]:
        download_all(ctx, candidates, tally, verifier=verifier)
        return tally.result()

    # The verifier starts after the browser has closed (decoding and Chromium would compete
    # for the same cores); it also holds engines that report no sizes (Bing) to the minimum.
    min_size = (params.min_width, params.min_height)
    return verifying_import(ctx, params.verify, work, lambda _: tally.message("done"), min_size)


async def _search(
    ctx: JobContext, params: HarvestParams, plans: list[ClassPlan], tally: Tally
) -> list[Candidate]:
    settings = ctx.settings
    # The job's own choice wins; otherwise the deployment's default.
    safe = params.safe_search if "safe_search" in params.model_fields_set else settings.safe_search
    base_urls = {"bing": settings.bing_url, "duckduckgo": settings.duckduckgo_url}
    total = sum(len(plan.queries) * len(params.engines) for plan in plans)
    done = 0
    candidates: list[Candidate] = []
    guard = Guard(AddressPolicy.from_setting(settings.fetch_allow))
    async with browser_context(
        settings.chromium, guard=guard, endpoint=settings.browser_endpoint
    ) as context:
        for plan in plans:
            taken: set[str] = set()
            sources = [(engine, query) for query in plan.queries for engine in params.engines]
            for index, (engine_name, query) in enumerate(sources):
                remaining = params.max_per_class - len(taken)
                if remaining <= 0:
                    break
                # An even share of what is left, so a source that falls short leaves
                # its share to the ones after it.
                quota = math.ceil(remaining / (len(sources) - index))
                message = (
                    f"searching {engine_name} for {query!r} ({plan.name}); found {tally.found}"
                )
                await asyncio.to_thread(ctx.report, done, total, message)
                engine = ENGINES[engine_name](base_urls[engine_name], safe)
                outcome = await run_search(
                    context, engine, query, quota, taken, params.min_width, params.min_height
                )
                done += 1
                tally.searches.append(outcome.summary(plan.name))
                for ranked in outcome.results:
                    result = ranked.result
                    provenance = Provenance(
                        source="search",
                        filename=filename_from_url(result.image_url),
                        engine=engine_name,
                        query=query[:300],
                        rank=ranked.rank,
                        image_url=result.image_url,
                        page_url=result.page_url,
                        thumbnail_url=result.thumbnail_url,
                        title=result.title,
                    )
                    candidates.append(
                        Candidate(result.image_url, plan.name, plan.class_id, provenance)
                    )
                    tally.count(plan.name, "found")
    return candidates
