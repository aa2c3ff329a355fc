"""Getting web images into a clean dataset: fastai's lesson steps against Winnow's, side by side.

A local server (its own process, 20 ms latency on every request) serves generated JPEGs
of mixed sizes up to 1600x1200, about 5% of them broken (truncated, HTML saved as .jpg,
random bytes). Both sides get the same URL list:

- fastai (the anchor): ``download_images(dest, urls=...)`` with its defaults (8 threads,
  4 s timeout), then ``verify_images(get_image_files(dest))`` and unlinking the failures:
  the lesson's steps, which keep no normalised copy and no thumbnail. For the same work as
  Winnow's it then runs ``resize_images(max_size=512)`` and a thumbnail pass (same_work.py).
- Winnow: the ``import_urls`` job: async downloads under the SSRF guard, sha256 dedupe, a
  database row with provenance per image, and each stored image verified while the rest
  download (a real decode in isolated children, normalised copy, thumbnail, perceptual
  hash, state ok or rejected, near-duplicate groups).

images/s = URLs in the list / wall seconds until every image is downloaded and verified.
``ratio`` compares Winnow with the lesson's steps, ``ratio_same_work`` with fastai doing
the same work. ``cpu_ms_per_image`` = CPU time of the side's process and all its children
(cputime.py; not the server's) / URLs. Imports and the image generation are outside the
timing. Each side's line also says how busy the machine's CPUs were meanwhile (from
/proc/stat, where there is one): a side that waits on the network leaves them idle, a side
bound by its CPU work keeps them busy. The last line is machine-readable.

    .venv/bin/python bench/ingest.py             # about a minute on 2 cores
    .venv/bin/python bench/ingest.py --quick     # 300 images: proves it runs
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for path in (HERE, ROOT):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from cputime import CpuClock  # noqa: E402
from extra import ensure_bench_extra  # noqa: E402
from same_work import normalise, thumbnails  # noqa: E402
from synthetic import job_context  # noqa: E402

LABEL = "bench"


def make_image(index: int, seed: int, broken: float) -> bytes:
    rng = random.Random(seed * 1_000_003 + index)
    from PIL import Image, ImageDraw

    width = rng.randrange(160, 1601)
    height = min(1200, max(120, int(width * rng.uniform(0.5, 1.0))))
    image = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x, y, r = rng.randrange(width), rng.randrange(height), rng.randrange(8, max(9, width // 6))
        colour = tuple(rng.randrange(256) for _ in range(3))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85)
    data = out.getvalue()
    if rng.random() >= broken:
        return data
    kind = rng.randrange(3)
    if kind == 0:
        return data[: len(data) // 2]
    if kind == 1:
        return b"<!DOCTYPE html><html><body>404 Not Found</body></html>"
    return rng.randbytes(4096)


def _write_one(args: tuple[Path, int, int, float]) -> None:
    folder, index, seed, broken = args
    (folder / f"{index:05d}.jpg").write_bytes(make_image(index, seed, broken))


def generate(folder: Path, count: int, seed: int, broken: float) -> None:
    """Write the served files once; a folder holding all of them is reused."""
    done = folder / ".complete"
    if done.exists():
        return
    folder.mkdir(parents=True, exist_ok=True)
    jobs = [(folder, i, seed, broken) for i in range(count)]
    with ProcessPoolExecutor() as pool:
        list(pool.map(_write_one, jobs, chunksize=32))
    done.touch()


async def _serve(folder: Path, latency: float, hosts: int) -> None:
    files = {f"/{p.name}": p.read_bytes() for p in folder.glob("*.jpg")}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ", 2)[1].decode()
                await asyncio.sleep(latency)
                body = files.get(path)
                status = b"200 OK" if body is not None else b"404 Not Found"
                body = body if body is not None else b"not found"
                close = b"connection: close" in head.lower()
                writer.write(
                    b"HTTP/1.1 " + status + b"\r\nContent-Type: image/jpeg\r\n"
                    b"Content-Length: "
                    + str(len(body)).encode()
                    + b"\r\n"
                    + (b"Connection: close\r\n" if close else b"")
                    + b"\r\n"
                    + body
                )
                await writer.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    servers = [
        await asyncio.start_server(handle, f"127.0.0.{n}", 0, backlog=1024)
        for n in range(1, hosts + 1)
    ]
    addresses = (srv.sockets[0].getsockname() for srv in servers)
    print(" ".join(f"{host}:{port}" for host, port in addresses), flush=True)
    await asyncio.gather(*(srv.serve_forever() for srv in servers))


def start_server(
    folder: Path, latency: float, hosts: int
) -> tuple[subprocess.Popen[str], list[str]]:
    command = [sys.executable, __file__, "--serve", str(folder), "--latency", str(latency)]
    command += ["--hosts", str(hosts)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    return process, process.stdout.readline().split()


@dataclass
class Run:
    seconds: float
    steps: str  # where the seconds went
    kept: int
    cpu_ms: float | None  # CPU milliseconds an image, the side's processes together
    notes: str = ""
    busy: str = ""  # how busy the CPUs were meanwhile

    def line(self, name: str, urls: int) -> str:
        notes = f" {self.notes}" if self.notes else ""
        return (
            f"{name}: {urls / self.seconds:.0f} img/s ({self.steps}), "
            f"{self.kept} images kept{notes}, {_ms(self.cpu_ms)} CPU ms an image{self.busy}"
        )


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def cpu_ticks() -> tuple[int, int] | None:
    """(busy, total) clock ticks of all CPUs since boot, or None without /proc/stat."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def busy_since(start: tuple[int, int] | None) -> str:
    end = cpu_ticks()
    if start is None or end is None or end[1] == start[1]:
        return ""
    share = (end[0] - start[0]) / (end[1] - start[1])
    from core.isolation import usable_cpus

    usable = usable_cpus()
    return f"; the machine's CPUs {share:.0%} busy ({usable} of {os.cpu_count()} usable here)"


def run_fastai(urls: list[str], dest: Path, server: int) -> tuple[Run, Run]:
    """The lesson's steps, then the rest of the same work: (lesson, same work)."""
    from fastai.vision.all import download_images, get_image_files, verify_images

    # fastprogress draws a bar on stdout; the timing does not need it.
    with contextlib.redirect_stdout(io.StringIO()):
        ticks, clock = cpu_ticks(), CpuClock(exclude=[server]).start()
        started = time.perf_counter()
        download_images(dest, urls=urls)
        downloaded = time.perf_counter()
        failed = verify_images(get_image_files(dest))
        failed.map(Path.unlink)
        verified = time.perf_counter()
        lesson_ms, lesson_busy = clock.ms_per(len(urls)), busy_since(ticks)
        resized = normalise(dest, dest.with_name(dest.name + "-normal"))
        thumbed = thumbnails(dest.with_name(dest.name + "-normal"), dest.with_name("thumbs"))
        same_ms, same_busy = clock.ms_per(len(urls)), busy_since(ticks)
        clock.stop()
    kept = len(get_image_files(dest))
    steps = f"{downloaded - started:.1f} s download + {verified - downloaded:.1f} s verify"
    lesson = Run(verified - started, steps, kept, lesson_ms, busy=lesson_busy)
    steps += f" + {resized:.1f} s resize_images(max_size=512) + {thumbed:.1f} s thumbnails"
    same = Run(verified - started + resized + thumbed, steps, kept, same_ms, busy=same_busy)
    return lesson, same


def run_winnow(urls: list[str], data_dir: Path, server: int) -> Run:
    from core.config import Settings
    from core.db import Base, make_engine, make_session_factory, transaction
    from core.tables import Project
    from workers.harvest.urllist import import_urls_job

    # The bench server listens on several loopback addresses, as images come from many hosts.
    settings = Settings(data_dir=data_dir, secret_key="bench", fetch_allow="127.0.0.0/8")
    data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.db_url)
    Base.metadata.create_all(engine)
    with transaction(make_session_factory(engine)) as session:
        project = Project(name="ingest bench")
        session.add(project)
        session.flush()
        project_id = project.id
    engine.dispose()
    items = [{"url": url, "label": LABEL} for url in urls]

    ticks, clock = cpu_ticks(), CpuClock(exclude=[server]).start()
    started = time.perf_counter()
    imported = import_urls_job(job_context(settings, project_id, "import_urls", {"items": items}))
    seconds = time.perf_counter() - started
    busy, cpu_ms = busy_since(ticks), clock.ms_per(len(urls))
    clock.stop()
    verified = imported["verify"]
    notes = (
        f"(import: {imported['downloaded']} stored, {imported['failures_by_reason']}; "
        f"verify rejected: {verified['rejected_by_reason']})"
    )
    steps = f"{seconds:.1f} s download and verify, overlapped"
    return Run(seconds, steps, verified["ok"], cpu_ms, notes, busy)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--latency", type=float, default=0.02, help="seconds per request")
    parser.add_argument("--broken", type=float, default=0.05, help="share of broken files")
    parser.add_argument("--hosts", type=int, default=16, help="loopback addresses serving")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--cache", type=Path, default=Path(tempfile.gettempdir()) / "winnow-bench-ingest"
    )
    parser.add_argument("--quick", action="store_true", help="300 images")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(_serve(args.serve, args.latency, args.hosts))
        return
    if args.quick:
        args.images = 300

    ensure_bench_extra()
    # torch and fastai warn about their own deprecations on import; not this bench's business.
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    folder = args.cache / f"n{args.images}-s{args.seed}-b{args.broken:g}"
    print(f"generating {args.images} images in {folder} ...", flush=True)
    generate(folder, args.images, args.seed, args.broken)
    server, hosts = start_server(folder, args.latency, args.hosts)
    work = Path(tempfile.mkdtemp(prefix="winnow-ingest-"))
    try:
        urls = [f"http://{hosts[i % len(hosts)]}/{i:05d}.jpg" for i in range(args.images)]
        # Imported up front so that neither side's timing includes importing torch.
        import fastai.vision.all  # noqa: F401

        import workers.verify.streaming  # noqa: F401

        theirs, same = run_fastai(urls, work / "fastai", server.pid)
        print(theirs.line("fastai, the lesson's steps", len(urls)), flush=True)
        print(same.line("fastai, the same work", len(urls)), flush=True)
        ours = run_winnow(urls, work / "winnow", server.pid)
        print(ours.line("winnow", len(urls)), flush=True)
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)
    winnow, anchor = len(urls) / ours.seconds, len(urls) / theirs.seconds
    print(
        f"RESULT ingest winnow={winnow:.1f} anchor={anchor:.1f} unit=img/s "
        f"ratio={winnow / anchor:.2f} ratio_same_work={same.seconds / ours.seconds:.2f} "
        f"anchor_same_work={len(urls) / same.seconds:.1f} "
        f"winnow_cpu_ms_per_image={_ms(ours.cpu_ms)} anchor_cpu_ms_per_image={_ms(theirs.cpu_ms)} "
        f"anchor_same_work_cpu_ms_per_image={_ms(same.cpu_ms)}"
    )


if __name__ == "__main__":
    main()
