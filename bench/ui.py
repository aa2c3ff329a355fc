"""The review page a person waits for: 100 tiles of a 10,000-image project, on SQLite.

Seeds a project of 10,000 scored images (rows, scores and a thumbnail file for each) on the
embedded default, serves it with uvicorn on 127.0.0.1, logs in as a browser does, and times
GET /projects/{id}/review?sort=-loss (the top losses, 100 tiles): the median of 20 requests
after one warm-up. The anchor is the 300 ms budget the issue set for a page that feels
instant. It also checks that thumbnails carry ETag and Cache-Control and that a second load
is answered 304 without a body.

    .venv/bin/python bench/ui.py [--images 10000] [--requests 20]

Last line: RESULT ui winnow=<ms> anchor=300 unit=ms ratio=<winnow/300> tiles=.. thumb_304=..
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import uvicorn
from PIL import Image as PILImage

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from api_load import seed_winnow  # noqa: E402

from api.main import create_app  # noqa: E402
from core.config import Settings  # noqa: E402
from core.db import make_engine, make_session_factory, transaction  # noqa: E402
from core.store import image_store  # noqa: E402
from core.tables import Image  # noqa: E402
from tests.services import free_port  # noqa: E402

ANCHOR_MS = 300.0


def thumbnail() -> bytes:
    out = io.BytesIO()
    PILImage.new("RGB", (160, 120), (120, 90, 60)).save(out, "JPEG", quality=85)
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=20)
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="winnow-bench-ui-"))
    settings = Settings(data_dir=data_dir, secret_key="bench")
    started = time.perf_counter()
    project_id, _ = seed_winnow(settings.db_url, args.images, clients=0)
    store, thumb = image_store(settings), thumbnail()
    factory = make_session_factory(make_engine(settings.db_url))
    with transaction(factory) as session:
        shas = list(session.scalars(Image.__table__.select().with_only_columns(Image.sha256)))
    for sha in shas:
        store.put(thumb, "thumb", sha256=sha)
    print(
        f"seeded {len(shas)} images with scores and thumbnails in "
        f"{time.perf_counter() - started:.1f} s",
        flush=True,
    )

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=60) as client:
            login = client.post(
                "/login", data={"username": "owner", "password": "owner-password-1"}
            )
            assert login.status_code in (200, 303), login.status_code
            url = f"/projects/{project_id}/review?state=ok&sort=-loss"
            warm = client.get(url)
            assert warm.status_code == 200, warm.status_code
            tiles = warm.text.count('class="tile ')
            times = []
            for _ in range(args.requests):
                t0 = time.perf_counter()
                page = client.get(url)
                times.append((time.perf_counter() - t0) * 1000)
                assert page.status_code == 200
            first_id = warm.text.split('data-id="', 1)[1].split('"', 1)[0]
            thumb_url = f"/api/projects/{project_id}/images/{first_id}/file?variant=thumb"
            once = client.get(thumb_url)
            again = client.get(thumb_url, headers={"If-None-Match": once.headers["etag"]})
            thumb_304 = (
                once.status_code == 200
                and "immutable" in once.headers.get("cache-control", "")
                and again.status_code == 304
                and not again.content
            )
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    median = statistics.median(times)
    print(
        f"review page, {tiles} tiles of {len(shas)}: median {median:.1f} ms, "
        f"min {min(times):.1f}, max {max(times):.1f} over {len(times)} requests"
    )
    print(
        f"RESULT ui winnow={median:.1f} anchor={ANCHOR_MS:.0f} unit=ms "
        f"ratio={median / ANCHOR_MS:.3f} tiles={tiles} thumb_304={'yes' if thumb_304 else 'no'}"
    )


if __name__ == "__main__":
    main()
