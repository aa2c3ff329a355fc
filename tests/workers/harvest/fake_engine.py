"""A local image search engine for end-to-end tests of the real Playwright path.

Bing-like: ``/images/search`` is a page that renders its results with JavaScript from
``/images/async?first=&count=`` (the endpoint the Bing engine pages through), loads more
when scrolled, and repeats its last page when results run out. DuckDuckGo-like: ``/``
renders tiles from ``/i.js`` JSON and fetches the ``next`` link on scroll. A query with
"captcha" gets a CAPTCHA page from either; one with "ratelimit" gets HTTP 403 from i.js.
Images are served by the same server under ``/img/``: every 10th is an HTML page, and
result 4 has the same bytes as result 3.
"""

from __future__ import annotations

import hashlib
import html
import json
from urllib.parse import quote

from tests.workers.harvest.server import LocalServer, Reply, Request, jpeg

RESULTS_PER_QUERY = 50
DDG_PAGE = 20

_BING_PAGE = """<!DOCTYPE html><html><head><title>{q} - Search Images</title></head>
<body><div id="results"></div><p id="status">Loading</p><script>
let first = 1, loading = false;
async function more() {{
  if (loading) return; loading = true;
  const r = await fetch(`/images/async?q={qs}&first=${{first}}&count=35`);
  const text = await r.text();
  document.getElementById("results").insertAdjacentHTML("beforeend", text);
  first += 35; loading = false;
  document.getElementById("status").textContent = "";
}}
window.addEventListener("scroll", () => {{
  if (window.innerHeight + window.scrollY >= document.body.scrollHeight - 50) more();
}});
setTimeout(more, 50);
</script></body></html>"""

_CAPTCHA_PAGE = """<!DOCTYPE html><html><head><title>Verify</title></head><body>
<h1>One last step</h1><p>Please solve the challenge below to continue.</p>
<div class="captcha">[captcha]</div></body></html>"""

_DDG_PAGE = """<!DOCTYPE html><html><head><title>{q} at DuckDuckGo</title></head>
<body><div id="tiles"></div><script>
let next = "i.js?q={qs}&o=json&s=0", loading = false;
async function more() {{
  if (loading || !next) return; loading = true;
  const r = await fetch("/" + next);
  if (r.ok) {{
    const data = await r.json();
    for (const item of data.results) {{
      const tile = document.createElement("div");
      tile.style.height = "300px";
      tile.innerHTML = `<img src="${{item.thumbnail}}" alt="">`;
      document.getElementById("tiles").appendChild(tile);
    }}
    next = data.next || null;
  }}
  loading = false;
}}
window.addEventListener("scroll", () => {{
  if (window.innerHeight + window.scrollY >= document.body.scrollHeight - 50) more();
}});
more();
</script></body></html>"""


def _slug(query: str) -> str:
    return hashlib.sha1(query.encode()).hexdigest()[:10]


class FakeEngine(LocalServer):
    def __init__(self) -> None:
        super().__init__(
            {
                "/images/search": self.bing_page,
                "/images/async": self.bing_async,
                "/i.js": self.ddg_json,
                "/img/": self.image,
                "/thumb/": self.image,
                "/": self.ddg_page,
            }
        )

    def image_url(self, query: str, n: int) -> str:
        return f"{self.url}/img/{_slug(query)}/{n}.jpg"

    def _result(self, query: str, n: int) -> dict[str, object]:
        return {
            "murl": self.image_url(query, n),
            "purl": f"{self.url}/page/{n}",
            "turl": f"{self.url}/thumb/{_slug(query)}/{n}.jpg",
            "t": f"{query} number {n}",
        }

    def bing_page(self, request: Request) -> Reply:
        query = request.query.get("q", "")
        if "captcha" in query:
            return Reply(200, _CAPTCHA_PAGE.encode(), {"Content-Type": "text/html"})
        body = _BING_PAGE.format(q=html.escape(query), qs=quote(query))
        return Reply(200, body.encode(), {"Content-Type": "text/html"})

    def bing_async(self, request: Request) -> Reply:
        query = request.query.get("q", "")
        first = int(request.query.get("first", "1"))
        count = int(request.query.get("count", "35"))
        # Past the end Bing answers with its last page again.
        first = min(first, RESULTS_PER_QUERY - count + 1)
        links = []
        for n in range(first, min(first + count, RESULTS_PER_QUERY + 1)):
            m = html.escape(json.dumps(self._result(query, n)))
            links.append(
                f'<div style="height:200px"><a class="iusc" m="{m}" href="#">{n}</a></div>'
            )
        return Reply(200, "\n".join(links).encode(), {"Content-Type": "text/html"})

    def ddg_page(self, request: Request) -> Reply:
        query = request.query.get("q", "")
        if "captcha" in query:
            return Reply(200, _CAPTCHA_PAGE.encode(), {"Content-Type": "text/html"})
        body = _DDG_PAGE.format(q=html.escape(query), qs=quote(query))
        return Reply(200, body.encode(), {"Content-Type": "text/html"})

    def ddg_json(self, request: Request) -> Reply:
        query = request.query.get("q", "")
        if "ratelimit" in query:
            return Reply(403, b"{}", {"Content-Type": "application/json"})
        start = int(request.query.get("s", "0"))
        results = []
        for n in range(start + 1, min(start + DDG_PAGE, RESULTS_PER_QUERY) + 1):
            item = self._result(query, n)
            results.append(
                {
                    "image": item["murl"],
                    "url": item["purl"],
                    "thumbnail": item["turl"],
                    "title": item["t"],
                    # Every 5th is reported small, for the minimum-size filter.
                    "width": image_size(n)[0],
                    "height": image_size(n)[1],
                }
            )
        data: dict[str, object] = {"results": results}
        if start + DDG_PAGE < RESULTS_PER_QUERY:
            data["next"] = f"i.js?q={quote(query)}&o=json&s={start + DDG_PAGE}"
        return Reply(200, json.dumps(data).encode(), {"Content-Type": "application/json"})

    def image(self, request: Request) -> Reply:
        n = int(request.path.rsplit("/", 1)[-1].split(".")[0])
        if n % 10 == 0:
            return Reply(200, b"<!DOCTYPE html><p>moved</p>", {"Content-Type": "image/jpeg"})
        seed = 3 if n == 4 else n
        salt = int(request.path.split("/")[2], 16) % 1000
        width, height = image_size(n)
        image = jpeg(width, height, seed=seed + salt * 1000)
        return Reply(200, image, {"Content-Type": "image/jpeg"})


def image_size(n: int) -> tuple[int, int]:
    """What result ``n`` is (and what DuckDuckGo's JSON says it is): every 5th is small."""
    return (120, 90) if n % 5 == 0 else (320, 240)
