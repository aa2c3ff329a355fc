"""DuckDuckGo Images.

The results page fetches its results as JSON from ``i.js`` (fields image, thumbnail, url,
title, width, height; a ``next`` link while there are more) and asks for more when the
user scrolls. The engine lets the browser do exactly that and reads the JSON the page
receives, so the tokens DuckDuckGo requires stay the page's business.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlencode, urlsplit

from playwright.async_api import Page, Response

from workers.harvest.engines.base import (
    Engine,
    EngineBlocked,
    SearchResult,
    detect_block,
    visible_text,
)


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def parse_ddg_results(data: Any) -> list[SearchResult]:
    """Results of one ``i.js`` answer; entries without an image URL are dropped."""
    items = data.get("results") if isinstance(data, dict) else None
    results = []
    for item in items if isinstance(items, list) else []:
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("image"), str)
            or not item["image"]
        ):
            continue
        results.append(
            SearchResult(
                image_url=item["image"],
                page_url=item.get("url") or None,
                thumbnail_url=item.get("thumbnail") or None,
                title=item.get("title") or None,
                width=_int(item.get("width")),
                height=_int(item.get("height")),
            )
        )
    return results


class DuckDuckGoEngine(Engine):
    name = "duckduckgo"

    def __init__(self, base_url: str, safe_search: bool = True, timeout: float = 15.0) -> None:
        super().__init__(base_url, safe_search, timeout)
        self._answers: asyncio.Queue[tuple[int, str, Any]] = asyncio.Queue()
        self._has_next = False

    def search_url(self, query: str) -> str:
        # kp: 1 strict, -2 off.
        params = {
            "q": query,
            "iax": "images",
            "ia": "images",
            "kp": "1" if self.safe_search else "-2",
        }
        return f"{self.base_url}/?{urlencode(params)}"

    async def _on_response(self, response: Response) -> None:
        if not urlsplit(response.url).path.endswith("/i.js"):
            return
        try:
            data = await response.json()
        except Exception:
            data = None
        self._answers.put_nowait((response.status, response.url, data))

    async def first_batch(self, page: Page, query: str) -> list[SearchResult]:
        page.on("response", self._on_response)
        response = await page.goto(self.search_url(query), wait_until="domcontentloaded")
        return await self._batch(page, response.status if response else None)

    async def next_batch(self, page: Page) -> list[SearchResult]:
        if not self._has_next:
            return []
        return await self._batch(page, None, scroll=True)

    @staticmethod
    async def _scroll(page: Page) -> None:
        # A wheel event as well as the jump: pages listen for either.
        await page.evaluate("() => window.scrollTo(0, document.body.scrollHeight)")
        await page.mouse.wheel(0, 4000)

    async def _batch(
        self, page: Page, status: int | None, scroll: bool = False
    ) -> list[SearchResult]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        tick = 0
        while True:
            # Scrolled again every second: a scroll that lands while the page is still
            # rendering the last batch (or before it is tall enough) asks for nothing.
            if scroll and tick % 5 == 0:
                await self._scroll(page)
            tick += 1
            try:
                answer_status, url, data = await asyncio.wait_for(self._answers.get(), 0.2)
            except TimeoutError:
                why = detect_block(page.url, await visible_text(page), status)
                if why:
                    raise EngineBlocked(why) from None
                if loop.time() > deadline:
                    self._has_next = False
                    return []
                continue
            if answer_status != 200:
                raise EngineBlocked(f"HTTP {answer_status} from {url}")
            self._has_next = isinstance(data, dict) and bool(data.get("next"))
            return parse_ddg_results(data)
