"""What every image search engine offers the harvest: one result shape, one small interface.

An engine knows its search URL, how to pull results out of its pages and how to get
the next batch. The driving loop (limits, dedupe, size filter, stop reasons) is shared
and lives in ``workers.harvest.search``.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar
from urllib.parse import urlsplit

from playwright.async_api import Page


@dataclass
class SearchResult:
    image_url: str
    page_url: str | None = None
    thumbnail_url: str | None = None
    title: str | None = None
    width: int | None = None
    height: int | None = None


class EngineBlocked(Exception):
    """The engine answered with a consent wall, a CAPTCHA or a block page."""


# Lower-case phrases of pages that stand between a script and the results.
_CAPTCHA = (
    "captcha",
    "verify you are human",
    "are you a robot",
    "not a robot",
    "unusual traffic",
    "bots use duckduckgo too",
    "solve the challenge",
)
_CONSENT = ("before you continue", "consent to the use of cookies", "manage your privacy choices")
_BLOCKED = ("access denied", "you have been blocked", "too many requests", "rate limit")


def detect_block(url: str, text: str, status: int | None = None) -> str | None:
    """Name the wall in front of the results, or None. ``text`` is the page's visible text."""
    host = (urlsplit(url).hostname or "").lower()
    lowered = text.lower()
    if host.startswith("consent.") or any(p in lowered for p in _CONSENT):
        return f"consent wall at {url}"
    for phrase in _CAPTCHA:
        if phrase in lowered:
            return f"CAPTCHA ({phrase!r}) at {url}"
    if status in (403, 429):
        return f"HTTP {status} at {url}"
    for phrase in _BLOCKED:
        if phrase in lowered:
            return f"block page ({phrase!r}) at {url}"
    return None


async def visible_text(page: Page) -> str:
    return str(
        await page.evaluate("() => document.body ? document.body.innerText.slice(0, 20000) : ''")
    )


def compose_query(text: str, negative_terms: list[str]) -> str:
    """The lesson's query form: ``grizzly bear -dog -arctos``."""
    negatives = [
        f"-{term.strip().lstrip('-')}" for term in negative_terms if term.strip().lstrip("-")
    ]
    return " ".join([text.strip(), *negatives])


class Engine(ABC):
    """One search at a time: ``first_batch`` opens the results, ``next_batch`` asks for more.

    An engine keeps the state of the current search (offsets, next links) between the
    two calls, so use a fresh instance per query. ``next_batch`` returns [] when the engine
    has nothing more, and both raise EngineBlocked on a wall.
    """

    name: ClassVar[str]

    def __init__(self, base_url: str, safe_search: bool = True, timeout: float = 15.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.safe_search = safe_search
        self.timeout = timeout

    @abstractmethod
    def search_url(self, query: str) -> str: ...

    @abstractmethod
    async def first_batch(self, page: Page, query: str) -> list[SearchResult]: ...

    @abstractmethod
    async def next_batch(self, page: Page) -> list[SearchResult]: ...

    async def wait_for(self, page: Page, selector: str, status: int | None = None) -> bool:
        """Wait until ``selector`` shows up; raise EngineBlocked if a wall shows up instead."""
        deadline = asyncio.get_running_loop().time() + self.timeout
        while True:
            if await page.locator(selector).count():
                return True
            why = detect_block(page.url, await visible_text(page), status)
            if why:
                raise EngineBlocked(why)
            if asyncio.get_running_loop().time() > deadline:
                return False
            await asyncio.sleep(0.2)
