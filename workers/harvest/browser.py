"""The Playwright browser session of a harvest: one headless Chromium per job.

Chromium comes from ``settings.chromium`` when set, else Playwright's own build (the
normal path after ``playwright install chromium``), else a system Chromium on PATH (how
this project's own machines have it: Debian's ``chromium``, no browser download).
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from playwright.async_api import Browser, BrowserContext, Playwright, async_playwright
from playwright.async_api import Error as PlaywrightError

# Quiet, container-friendly Chromium: no background traffic of its own, no GPU, and no
# sandbox because workers usually run as root in a container where it cannot start.
CHROMIUM_ARGS = (
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-sandbox",
)
SYSTEM_CHROMIUMS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


class BrowserUnavailable(RuntimeError):
    """No Chromium could be started."""


def user_agent(version: str) -> str:
    # Headless Chromium says "HeadlessChrome" in its default User-Agent, which engines block.
    major = version.split(".", 1)[0]
    return (
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        f"Chrome/{major}.0.0.0 Safari/537.36"
    )


async def _launch(playwright: Playwright, chromium: str) -> Browser:
    candidates = (
        [chromium]
        if chromium
        else [""] + [p for n in SYSTEM_CHROMIUMS if (p := shutil.which(n) or "")]
    )
    errors = []
    for path in candidates:
        try:
            return await playwright.chromium.launch(
                executable_path=path or None, args=list(CHROMIUM_ARGS), headless=True
            )
        except PlaywrightError as exc:
            errors.append(f"{path or 'Playwright Chromium'}: {str(exc).splitlines()[0]}")
    raise BrowserUnavailable(
        "cannot start Chromium (set WINNOW_CHROMIUM to its path, or run "
        "`playwright install chromium`): " + "; ".join(errors)
    )


@asynccontextmanager
async def browser_context(
    chromium: str = "", javascript: bool = True
) -> AsyncIterator[BrowserContext]:
    async with async_playwright() as playwright:
        browser = await _launch(playwright, chromium)
        try:
            context = await browser.new_context(
                user_agent=user_agent(browser.version),
                locale="en-US",
                viewport={"width": 1366, "height": 900},
                java_script_enabled=javascript,
                service_workers="block",
            )
            yield context
        finally:
            await browser.close()
