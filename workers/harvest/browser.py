"""The Playwright browser session of a harvest: one headless Chromium per job.

Chromium comes from ``settings.chromium`` when set, else Playwright's own build (the
normal path after ``playwright install chromium``), else a system Chromium on PATH (how
this project's own machines have it: Debian's ``chromium``, no browser download).

With ``settings.browser_endpoint`` Chromium runs elsewhere: a Playwright server in a
container of its own (compose's ``browser`` service) starts it for each job. That
container holds no credentials and sits on a network without the database and Redis,
so a page that got the better of Chromium still has no route to them; the worker that
drives it over the connection keeps the request guard below.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from playwright.async_api import (
    Browser,
    BrowserContext,
    Playwright,
    Route,
    WebSocketRoute,
    async_playwright,
)
from playwright.async_api import Error as PlaywrightError
from yarl import URL

from workers.harvest.ssrf import FetchRefused, Guard, check_url

log = logging.getLogger(__name__)

# Quiet, container-friendly Chromium: no background traffic of its own, no GPU.
CHROMIUM_ARGS = (
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-gpu",
    "--disable-dev-shm-usage",
)
# Schemes a results page loads without the network.
LOCAL_SCHEMES = ("data:", "blob:", "about:")
SYSTEM_CHROMIUMS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# How a Playwright server is told the launch options of the browser it starts for a client.
LAUNCH_HEADER = "x-playwright-launch-options"


class BrowserUnavailable(RuntimeError):
    """No Chromium could be started."""


def user_agent(version: str) -> str:
    # Headless Chromium says "HeadlessChrome" in its default User-Agent, which engines block.
    major = version.split(".", 1)[0]
    return (
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        f"Chrome/{major}.0.0.0 Safari/537.36"
    )


def sandbox_possible() -> bool:
    """Chromium's sandbox needs an unprivileged user: as root it refuses to start with it.
    The browser worker image runs as an ordinary user, and there the sandbox is on;
    as root (CI, some containers) Chromium runs without it, behind the request guard."""
    return os.geteuid() != 0


async def _start(playwright: Playwright, path: str, sandbox: bool, endpoint: str) -> Browser:
    if endpoint:
        options: dict[str, object] = {
            "headless": True,
            "args": list(CHROMIUM_ARGS),
            "chromiumSandbox": sandbox,
        }
        if path:
            options["executablePath"] = path
        return await playwright.chromium.connect(
            endpoint, headers={LAUNCH_HEADER: json.dumps(options)}
        )
    return await playwright.chromium.launch(
        executable_path=path or None,
        args=list(CHROMIUM_ARGS),
        headless=True,
        chromium_sandbox=sandbox,
    )


async def _launch(playwright: Playwright, chromium: str, endpoint: str = "") -> Browser:
    if endpoint or chromium:
        candidates = [chromium]
    else:
        candidates = [""] + [p for n in SYSTEM_CHROMIUMS if (p := shutil.which(n) or "")]
    errors = []
    # With the sandbox first where it can work; a kernel without user namespaces (some
    # container runtimes) refuses it, and then Chromium starts without, said in the log.
    # A remote server's user is not visible from here, so there both are tried.
    modes = [True, False] if endpoint or sandbox_possible() else [False]
    for path in candidates:
        for sandbox in modes:
            try:
                browser = await _start(playwright, path, sandbox, endpoint)
            except PlaywrightError as exc:
                where = endpoint or path or "Playwright Chromium"
                errors.append(f"{where}: {str(exc).splitlines()[0]}")
                continue
            if not sandbox:
                log.warning("Chromium runs without its sandbox (root, or no user namespaces)")
            return browser
    raise BrowserUnavailable(
        "cannot start Chromium (set WINNOW_CHROMIUM to its path, or run "
        "`playwright install chromium`): " + "; ".join(errors)
    )


# A WebSocket is an HTTP request that upgrades: checked as one.
SOCKET_SCHEMES = {"ws": "http", "wss": "https"}


async def _public(guard: Guard, url: str) -> bool:
    try:
        parsed = URL(url)
        parsed = parsed.with_scheme(SOCKET_SCHEMES.get(parsed.scheme, parsed.scheme))
        check_url(parsed)
        assert parsed.host is not None
        guard.fetching(parsed.host)
        await guard.addresses(parsed.host, parsed.port or 443)
    except (FetchRefused, OSError, ValueError) as exc:
        log.info("browser request refused: %s (%s)", url[:200], exc)
        return False
    return True


def request_guard(guard: Guard) -> Callable[[Route], Awaitable[None]]:
    """A Playwright route handler: every request the page makes (the results page, its
    scripts, images, XHR, redirects) goes out only to public addresses, as the downloader's
    do (workers/harvest/ssrf.py). Chromium resolves the name again when it connects, so
    this is the page-level check; the network policy is the other (compose runs Chromium in
    the ``browser`` service, on a network without the database and Redis)."""

    async def handle(route: Route) -> None:
        url = route.request.url
        if url.startswith(LOCAL_SCHEMES) or await _public(guard, url):
            await route.continue_()
        else:
            await route.abort("blockedbyclient")

    return handle


def socket_guard(guard: Guard) -> Callable[[WebSocketRoute], Awaitable[None]]:
    """The same for WebSockets, which request routes never see: a page's socket reaches
    its server only at a public address; any other is closed before it connects."""

    async def handle(socket: WebSocketRoute) -> None:
        if await _public(guard, socket.url):
            socket.connect_to_server()
        else:
            await socket.close(code=1008, reason="refused")

    return handle


@asynccontextmanager
async def browser_context(
    chromium: str = "", javascript: bool = True, guard: Guard | None = None, endpoint: str = ""
) -> AsyncIterator[BrowserContext]:
    async with async_playwright() as playwright:
        browser = await _launch(playwright, chromium, endpoint)
        try:
            context = await browser.new_context(
                user_agent=user_agent(browser.version),
                locale="en-US",
                viewport={"width": 1366, "height": 900},
                java_script_enabled=javascript,
                service_workers="block",
            )
            if guard is not None:
                await context.route("**/*", request_guard(guard))
                await context.route_web_socket(lambda _url: True, socket_guard(guard))
            yield context
        finally:
            await browser.close()
