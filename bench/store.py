"""Sizing figures for a deployment: the store's costs, and what each process weighs.

Store: N generated images, each a normalised JPEG (512 px, about 40 kB) and a thumbnail
(160 px, about 5 kB), as verification writes them. Timed: writing them (put), asking for
them (exists), reading thumbnails (what the review page costs the API per tile), and
fetch_many of the normalised copies into an empty cache (what a training job does on a
machine that has never seen the images). Once on the local directory, once on a bucket:
moto's S3 server on 127.0.0.1 unless WINNOW_STORE_URL (with WINNOW_STORE_ENDPOINT_URL and
keys) names a real one, e.g. MinIO. moto is a Python server in this process, so its figures
are a floor for a real endpoint, not a ceiling.

Footprint: bytes installed by a plain install (the API image's Python packages) and by the
worker extra, from this environment's installed files; resident memory of an idle API
process (`winnow serve --no-worker`) and of an idle worker (`winnow worker -Q cpu -c 1`,
its main process and pool child together), on SQLite.

Run from the repository root: ``.venv/bin/python bench/store.py [--images N]``.
The last line is ``RESULT store local_put=... s3_put=... unit=img/s``.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.config import Settings  # noqa: E402
from core.store import ImageStore, LocalStore, image_store  # noqa: E402
from tests.services import S3Server, free_port, wait_for_port, winnow_env  # noqa: E402
from tests.test_install_extras import _closure  # noqa: E402


def jpeg(side: int, seed: int) -> bytes:
    rng = random.Random(seed)
    image = Image.effect_noise((side, side * 3 // 4), 40).convert("RGB")
    image = Image.blend(
        image, Image.new("RGB", image.size, tuple(rng.choices(range(256), k=3))), 0.6
    )
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85)
    return out.getvalue()


def rate(count: int, work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return count / (time.perf_counter() - started)


def store_figures(
    store: ImageStore, fresh: ImageStore, images: list[tuple[bytes, bytes]]
) -> dict[str, float]:
    shas: list[str] = []

    def put() -> None:
        for normal, thumb in images:
            sha = store.put(normal, "normal", sha256=f"{len(shas):064x}")
            store.put(thumb, "thumb", sha256=sha)
            shas.append(sha)

    figures = {"put": rate(len(images), put)}
    figures["exists"] = rate(len(shas), lambda: [store.exists(s, "thumb") for s in shas])
    figures["read_thumb"] = rate(len(shas), lambda: [store.read(s, "thumb") for s in shas])
    figures["fetch_many"] = rate(len(shas), lambda: fresh.fetch_many(shas, "normal"))
    return figures


def installed_bytes(requirements: list[str]) -> int:
    total = 0
    for name in _closure(requirements):
        try:
            files = metadata.distribution(name).files or []
        except metadata.PackageNotFoundError:
            continue
        total += sum(f.size or 0 for f in files)
    return total


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children, in MB."""
    children = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True
    ).stdout.split()
    total = 0
    for each in [pid, *map(int, children)]:
        with open(f"/proc/{each}/status") as status:
            total += next(int(line.split()[1]) for line in status if line.startswith("VmRSS"))
    return total / 1024


def idle_rss(argv: list[str], env: dict[str, str], port: int | None, settle: float) -> float:
    proc = subprocess.Popen(
        argv,
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        if port is not None:
            wait_for_port(port, timeout=120, proc=proc)
        time.sleep(settle)
        return rss_mb(proc.pid)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    args = parser.parse_args()
    images = [(jpeg(512, n), jpeg(160, n)) for n in range(args.images)]
    size_kb = sum(len(n) + len(t) for n, t in images) / len(images) / 1024
    print(f"{args.images} images, {size_kb:.0f} kB per image (normal + thumb)")
    work = Path(tempfile.mkdtemp(prefix="winnow-bench-store-"))

    local = store_figures(LocalStore(work / "local"), LocalStore(work / "local"), images)
    server = None
    if os.environ.get("WINNOW_STORE_URL"):
        where = os.environ["WINNOW_STORE_URL"]
        bucket = lambda d: image_store(Settings(data_dir=d))  # noqa: E731
    else:
        server = S3Server()
        where = f"moto on {server.endpoint}"
        prefix = f"bench-{time.time_ns()}"
        bucket = lambda d: image_store(server.settings(d, prefix))  # noqa: E731
    s3 = store_figures(bucket(work / "a"), bucket(work / "b"), images)
    if server is not None:
        server.stop()
    print(f"{'img/s':<12}{'local':>10}{'bucket':>10}   bucket: {where}")
    for name in local:
        print(f"{name:<12}{local[name]:>10.0f}{s3[name]:>10.0f}")

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = installed_bytes(project["dependencies"])
    full = installed_bytes(project["dependencies"] + project["optional-dependencies"]["worker"])
    print(f"installed: plain (API image) {base / 1e6:.0f} MB, with the worker extra", end=" ")
    print(f"{full / 1e6:.0f} MB")

    port = free_port()
    env = winnow_env(
        work / "footprint", WINNOW_SECRET_KEY="bench", WINNOW_ADMIN_PASSWORD="bench-password"
    )
    api = idle_rss(
        [sys.executable, "-m", "api.cli", "serve", "--no-worker", "--port", str(port)], env, port, 2
    )
    worker = idle_rss(
        [sys.executable, "-m", "api.cli", "worker", "-Q", "cpu", "-c", "1"], env, None, 8
    )
    print(
        f"idle resident memory: API process {api:.0f} MB, worker (main + 1 child) {worker:.0f} MB"
    )
    print(
        f"RESULT store local_put={local['put']:.0f} s3_put={s3['put']:.0f} "
        f"local_fetch={local['fetch_many']:.0f} s3_fetch={s3['fetch_many']:.0f} unit=img/s "
        f"api_rss_mb={api:.0f} worker_rss_mb={worker:.0f}"
    )


if __name__ == "__main__":
    main()
