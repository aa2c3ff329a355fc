"""The harvest browser reaches public addresses only: what a results page asks for on an
address outside the allowlist (here another loopback address standing in for the database
or the metadata service) is refused before Chromium connects."""

from __future__ import annotations

import asyncio

from tests.workers.harvest.server import LocalServer, Reply, jpeg
from workers.harvest.browser import browser_context
from workers.harvest.ssrf import AddressPolicy, Guard


def test_a_results_page_cannot_reach_a_non_public_address(chromium: str) -> None:
    with LocalServer(
        {"/": lambda _: Reply(body=jpeg(), headers={"Content-Type": "image/jpeg"})},
        host="127.0.0.2",
    ) as inside:
        page_html = (
            f'<html><body><img src="{inside.url}/secret.jpg">'
            f'<script>fetch("{inside.url}/api").catch(() => {{}});</script>'
            "<p>results</p></body></html>"
        ).encode()
        with LocalServer(
            {"/": lambda _: Reply(body=page_html, headers={"Content-Type": "text/html"})}
        ) as engine:
            # Only the engine's address is allowed, as a deployment allows nothing private.
            guard = Guard(AddressPolicy.from_setting("127.0.0.1/32"))

            async def visit() -> str:
                async with browser_context(chromium, guard=guard) as context:
                    page = await context.new_page()
                    await page.goto(f"{engine.url}/search?q=bears")
                    await page.wait_for_load_state("networkidle")
                    return await page.inner_text("p")

            assert asyncio.run(visit()) == "results"
            assert engine.hits("/search") == 1
        assert inside.hits() == 0
