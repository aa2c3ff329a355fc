"""The harvest browser reaches public addresses only: what a results page asks for on an
address outside the allowlist (here another loopback address standing in for the database
or the metadata service) is refused before Chromium connects, WebSockets included. The same
holds when Chromium runs apart from the worker, started by a Playwright server (compose's
``browser`` service)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest
from websockets.sync.server import ServerConnection, serve

from tests.services import free_port, wait_for_port
from tests.workers.harvest.server import LocalServer, Reply, jpeg
from workers.harvest.browser import browser_context
from workers.harvest.ssrf import AddressPolicy, Guard


@pytest.fixture
def playwright_server() -> Iterator[str]:
    """``playwright run-server`` as compose runs it, on a free local port."""
    port = free_port()
    command = [sys.executable, "-m", "playwright", "run-server", "--host", "127.0.0.1"]
    # Its own process group: the Python wrapper runs Playwright's node driver as a child.
    proc = subprocess.Popen([*command, "--port", str(port), "--unsafe"], start_new_session=True)
    try:
        wait_for_port(port, proc=proc)
        yield f"ws://127.0.0.1:{port}/"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)


def _visit_results_page(chromium: str, endpoint: str) -> None:
    with LocalServer(
        {"/": lambda _: Reply(body=jpeg(), headers={"Content-Type": "image/jpeg"})},
        host="127.0.0.2",
    ) as inside:
        page_html = (
            f'<html><body><img src="{inside.url}/secret.jpg">'
            f'<script>fetch("{inside.url}/api").catch(() => {{}});'
            f'new WebSocket("{inside.url.replace("http", "ws")}/socket");</script>'
            "<p>results</p></body></html>"
        ).encode()
        with LocalServer(
            {"/": lambda _: Reply(body=page_html, headers={"Content-Type": "text/html"})}
        ) as engine:
            # Only the engine's address is allowed, as a deployment allows nothing private.
            guard = Guard(AddressPolicy.from_setting("127.0.0.1/32"))

            async def visit() -> str:
                async with browser_context(chromium, guard=guard, endpoint=endpoint) as context:
                    page = await context.new_page()
                    await page.goto(f"{engine.url}/search?q=bears")
                    await page.wait_for_load_state("networkidle")
                    return await page.inner_text("p")

            assert asyncio.run(visit()) == "results"
            assert engine.hits("/search") == 1
        assert inside.hits() == 0


def test_a_results_page_cannot_reach_a_non_public_address(chromium: str) -> None:
    _visit_results_page(chromium, endpoint="")


def test_chromium_started_by_a_playwright_server_keeps_the_guard(
    chromium: str, playwright_server: str
) -> None:
    _visit_results_page(chromium, endpoint=playwright_server)


def test_a_websocket_to_a_public_address_still_connects(chromium: str) -> None:
    port = free_port()

    def answer(socket: ServerConnection) -> None:
        message = socket.recv()
        socket.send("echo " + (message if isinstance(message, str) else message.decode()))

    with serve(answer, "127.0.0.1", port) as echo:
        threading.Thread(target=echo.serve_forever, daemon=True).start()
        page_html = (
            f'<html><body><p>waiting</p><script>const s = new WebSocket("ws://127.0.0.1:{port}/");'
            's.onopen = () => s.send("bears");'
            's.onmessage = (e) => { document.querySelector("p").textContent = e.data; };'
            "</script></body></html>"
        ).encode()
        with LocalServer(
            {"/": lambda _: Reply(body=page_html, headers={"Content-Type": "text/html"})}
        ) as engine:
            guard = Guard(AddressPolicy.from_setting("127.0.0.1/32"))

            async def visit() -> str:
                async with browser_context(chromium, guard=guard) as context:
                    page = await context.new_page()
                    await page.goto(f"{engine.url}/search")
                    await page.wait_for_function(
                        "document.querySelector('p').textContent !== 'waiting'"
                    )
                    return await page.inner_text("p")

            assert asyncio.run(visit()) == "echo bears"
        echo.shutdown()
