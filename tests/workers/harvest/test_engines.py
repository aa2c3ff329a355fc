"""Engine parsers on real saved Bing pages (read in place from ../shared/fixtures) and units."""

from __future__ import annotations

import asyncio

import pytest
from playwright.async_api import Route

from tests.conftest import SHARED_FIXTURES
from workers.harvest.browser import browser_context
from workers.harvest.engines import compose_query
from workers.harvest.engines.base import detect_block
from workers.harvest.engines.bing import BingEngine, parse_bing_html
from workers.harvest.engines.duckduckgo import parse_ddg_results

BING = SHARED_FIXTURES / "search" / "bing"
FULL = "bing_images_search__coach-youmene__koceilach-Gym-coach.html"
DEGRADED = "bing_images_search__rps-savana__Pradecer-HOMAGE-INFRATECH.html"


def saved_page(name: str) -> bytes:
    path = BING / name
    if not path.exists():
        pytest.skip(
            f"saved Bing pages not found at {BING}: the shared fixtures live beside the repository"
        )
    return path.read_bytes()


def test_full_bing_page_gives_all_35_results() -> None:
    # The page was saved through a lossy code page; its URLs and JSON are plain ASCII.
    page = parse_bing_html(saved_page(FULL).decode("utf-8", errors="replace"))
    assert len(page.results) == 35
    assert len({r.image_url for r in page.results}) == 35
    assert all(r.image_url.startswith("https://") for r in page.results)
    assert all(r.page_url and r.thumbnail_url and r.title for r in page.results)
    # Nothing is dropped for its extension.
    assert sum(not r.image_url.lower().endswith((".jpg", ".jpeg")) for r in page.results) >= 12
    first = page.results[0]
    assert (
        first.image_url
        == "https://lookaside.fbsbx.com/lookaside/crawler/media/?media_id=100006587641382"
    )
    assert first.page_url == "https://www.facebook.com/Youmene.Mc/"
    assert (
        first.thumbnail_url
        == "https://ts2.mm.bing.net/th?id=OIP.FH6CqUjxt8wv8YG67lpAVQHaHd&pid=15.1"
    )
    assert first.title == "Youmene Mechenane"
    assert page.next_url is not None and "first=36&count=35" in page.next_url


def test_degraded_bing_page_gives_its_one_result_and_no_next_link() -> None:
    page = parse_bing_html(saved_page(DEGRADED).decode("utf-8", errors="replace"))
    assert [r.image_url for r in page.results] == [
        "https://cdn.wccftech.com/wp-content/uploads/2022/05/Google-Maps-2.jpg"
    ]
    assert page.next_url == ""


def test_saved_pages_through_the_bing_engine_in_chromium(chromium: str) -> None:
    """The Bing engine in a real browser, with the saved pages answering for bing.com."""
    pages = {"coach": saved_page(FULL), "savana": saved_page(DEGRADED)}

    async def run() -> dict[str, tuple[int, int, str]]:
        async def answer(route: Route) -> None:
            # Only the pages themselves; nothing leaves the machine.
            for query, body in pages.items():
                if route.request.url == BingEngine("https://www.bing.com").search_url(query):
                    await route.fulfill(status=200, body=body, content_type="text/html")
                    return
            await route.abort()

        seen = {}
        async with browser_context(chromium, javascript=False) as context:
            await context.route("**/*", answer)
            page = await context.new_page()
            for query in pages:
                engine = BingEngine("https://www.bing.com")
                first = len(await engine.first_batch(page, query))
                next_url = engine.next_url()
                # The full page would go on to /images/async (aborted here), so only the
                # degraded one is asked for more: it has to end without asking Bing.
                more = len(await engine.next_batch(page)) if query == "savana" else -1
                seen[query] = (first, more, next_url)
        return seen

    seen = asyncio.run(run())
    assert seen["coach"][0] == 35
    assert "first=36&count=35" in seen["coach"][2] and "adlt=strict" in seen["coach"][2]
    assert seen["savana"][:2] == (1, 0)


def test_duckduckgo_json_results() -> None:
    data = {
        "results": [
            {
                "image": "https://a.example/1.png",
                "thumbnail": "https://t.example/1",
                "url": "https://a.example/",
                "title": "One",
                "width": 640,
                "height": "480",
            },
            {"image": "", "title": "no image"},
            {"thumbnail": "https://t.example/2"},
            {"image": "https://b.example/2", "width": None},
        ],
        "next": "i.js?s=100",
    }
    results = parse_ddg_results(data)
    assert [(r.image_url, r.width, r.height) for r in results] == [
        ("https://a.example/1.png", 640, 480),
        ("https://b.example/2", None, None),
    ]
    assert results[0].page_url == "https://a.example/" and results[0].title == "One"
    assert parse_ddg_results(None) == [] and parse_ddg_results({"results": "x"}) == []


def test_query_with_negative_terms() -> None:
    assert (
        compose_query(" grizzly bear ", ["dog", "-arctos", " ", "-"]) == "grizzly bear -dog -arctos"
    )


@pytest.mark.parametrize(
    ("url", "text", "status", "kind"),
    [
        ("https://www.bing.com/images/search", "Please solve the challenge below", None, "CAPTCHA"),
        ("https://duckduckgo.com/", "Unfortunately, bots use DuckDuckGo too.", None, "CAPTCHA"),
        ("https://consent.example.com/ml", "Sign in", None, "consent wall"),
        ("https://www.example.com/", "Before you continue to Search", None, "consent wall"),
        ("https://www.bing.com/images/search", "", 429, "HTTP 429"),
        ("https://www.bing.com/images/search", "Access Denied", 200, "block page"),
        ("https://www.bing.com/images/search", "grizzly bear images", 200, None),
    ],
)
def test_walls_are_recognised(url: str, text: str, status: int | None, kind: str | None) -> None:
    why = detect_block(url, text, status)
    assert why.startswith(kind) if why and kind else why is kind
