"""Driving one engine through one query: batches until the limit, the end, or a wall."""

from __future__ import annotations

from dataclasses import dataclass, field

from playwright.async_api import BrowserContext
from playwright.async_api import Error as PlaywrightError

from workers.harvest.engines import Engine, EngineBlocked, SearchResult

# Engines end long before this; it only bounds a page that keeps sending filtered results.
MAX_BATCHES = 100


@dataclass
class Ranked:
    rank: int
    result: SearchResult


@dataclass
class SearchOutcome:
    engine: str
    query: str
    results: list[Ranked] = field(default_factory=list)
    stopped: str = ""
    too_small: int = 0

    def summary(self, class_name: str) -> dict[str, object]:
        return {
            "class": class_name,
            "engine": self.engine,
            "query": self.query,
            "found": len(self.results),
            "too_small": self.too_small,
            "stopped": self.stopped,
        }


def too_small(result: SearchResult, min_width: int, min_height: int) -> bool:
    # Only where the engine reports dimensions; unknown sizes pass and verify decides.
    return (result.width is not None and result.width < min_width) or (
        result.height is not None and result.height < min_height
    )


async def run_search(
    context: BrowserContext,
    engine: Engine,
    query: str,
    limit: int,
    taken: set[str],
    min_width: int = 0,
    min_height: int = 0,
) -> SearchOutcome:
    """Collect up to ``limit`` results whose image URL is not in ``taken`` (which grows).

    Whatever was found before a wall or an error is kept; ``stopped`` says why it ended.
    Ranks are the engine's own order among the distinct images it returned.
    """
    outcome = SearchOutcome(engine.name, query)
    seen: set[str] = set()
    page = await context.new_page()
    try:
        batch = await engine.first_batch(page, query)
        if not batch:
            outcome.stopped = "no results"
            return outcome
        for _ in range(MAX_BATCHES):
            new = [r for r in batch if r.image_url not in seen]
            if not new:
                # Bing repeats its last page instead of saying it is done.
                outcome.stopped = "no more results"
                return outcome
            for result in new:
                seen.add(result.image_url)
                if result.image_url in taken:
                    continue
                if too_small(result, min_width, min_height):
                    outcome.too_small += 1
                    continue
                taken.add(result.image_url)
                outcome.results.append(Ranked(len(seen), result))
                if len(outcome.results) >= limit:
                    outcome.stopped = "limit reached"
                    return outcome
            batch = await engine.next_batch(page)
        outcome.stopped = f"stopped after {MAX_BATCHES} batches"
    except EngineBlocked as exc:
        outcome.stopped = f"blocked: {exc}"
    except PlaywrightError as exc:
        outcome.stopped = f"error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
    finally:
        await page.close()
    return outcome
