"""Bing Images.

Results are ``a.iusc`` links whose ``m`` attribute is JSON: ``murl`` the full image,
``purl`` the page it sits on, ``turl`` Bing's thumbnail, ``t`` the title. The first page
is server-rendered; more results come as HTML fragments from ``/images/async`` with
``first=<offset>&count=35``. When results run out Bing repeats its last page, so the
driver stops on a batch without a new image URL. No filtering by file extension: a third
of real image URLs do not end in one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import urlencode

from playwright.async_api import Page

from workers.harvest.engines.base import Engine, EngineBlocked, SearchResult, detect_block

BATCH = 35
# Runs in the page so that the request carries the page's own cookies and headers.
_FETCH_JS = """async (url) => {
  const response = await fetch(url, {credentials: "include"});
  return [response.status, await response.text()];
}"""


@dataclass
class BingPage:
    results: list[SearchResult] = field(default_factory=list)
    # None when the page has no next link at all; "" when Bing says there is no more.
    next_url: str | None = None


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.page = BingPage()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if "data-nexturl" in values and self.page.next_url is None:
            self.page.next_url = values["data-nexturl"] or ""
        if tag != "a" or "iusc" not in (values.get("class") or "").split():
            return
        result = parse_m(values.get("m") or "")
        if result is not None:
            self.page.results.append(result)


def parse_m(m: str) -> SearchResult | None:
    """One result from the (already HTML-unescaped) ``m`` attribute; None if it has no image."""
    try:
        data = json.loads(m)
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("murl"), str) or not data["murl"]:
        return None
    return SearchResult(
        image_url=data["murl"],
        page_url=data.get("purl") or None,
        thumbnail_url=data.get("turl") or None,
        title=data.get("t") or None,
    )


def parse_bing_html(html: str) -> BingPage:
    """Results and next link of a Bing Images page or ``/images/async`` fragment."""
    collector = _Collector()
    collector.feed(html)
    collector.close()
    return collector.page


class BingEngine(Engine):
    name = "bing"

    def __init__(self, base_url: str, safe_search: bool = True, timeout: float = 15.0) -> None:
        super().__init__(base_url, safe_search, timeout)
        self._query = ""
        self._first = 1
        self._exhausted = False

    def _params(self, query: str) -> dict[str, str]:
        return {"q": query, "adlt": "strict" if self.safe_search else "off"}

    def search_url(self, query: str) -> str:
        params = {**self._params(query), "form": "HDRSC2", "first": "1"}
        return f"{self.base_url}/images/search?{urlencode(params)}"

    def next_url(self) -> str:
        """The ``/images/async`` URL of the next batch of the current search."""
        params = {
            **self._params(self._query),
            "first": str(self._first),
            "count": str(BATCH),
            "mmasync": "1",
        }
        return f"{self.base_url}/images/async?{urlencode(params)}"

    async def first_batch(self, page: Page, query: str) -> list[SearchResult]:
        self._query = query
        response = await page.goto(self.search_url(query), wait_until="domcontentloaded")
        await self.wait_for(page, "a.iusc", response.status if response else None)
        parsed = parse_bing_html(await page.content())
        self._first = 1 + len(parsed.results)
        # An explicitly empty next link is Bing saying this is all there is.
        self._exhausted = parsed.next_url == ""
        return parsed.results

    async def next_batch(self, page: Page) -> list[SearchResult]:
        if self._exhausted:
            return []
        url = self.next_url()
        status, text = await page.evaluate(_FETCH_JS, url)
        parsed = parse_bing_html(text)
        if not parsed.results:
            why = detect_block(url, text, int(status))
            if why:
                raise EngineBlocked(why)
        self._first += len(parsed.results)
        return parsed.results
