"""Verification throughput: fastai's verify_images against Winnow's verify job.

Both run on the same 2,000 generated files, on all CPUs this process may use. fastai opens
each file and decodes it at 1/8 scale (its ``verify_images``). Winnow's job does more: a
full decode under limits in isolated children, EXIF orientation, RGB conversion, a
normalised copy and a thumbnail written to the store, a perceptual hash, database writes
with label events and near-duplicate grouping. ``ratio`` is against ``verify_images``
alone; ``ratio_same_work`` against ``verify_images`` followed by the lesson's step that
normalises a folder, ``resize_images(max_size=512)`` (a decode at 1/8, a full decode, a
resize and a save per file); Winnow's thumbnails, hashes and rows are still extra.
Each side runs twice; the best run counts. ``cpu_ms_per_image`` = CPU time of the process
and all its children (cputime.py) / files, from the best run.

Run from the repository root: ``.venv/bin/python bench/verify.py [--files N] [--quick]``.
The last line is ``RESULT verify winnow=<img/s> anchor=<img/s> unit=img/s ratio=<w/a>
ratio_same_work=<w/a> ...``.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from cputime import CpuClock  # noqa: E402
from extra import ensure_bench_extra  # noqa: E402
from same_work import normalise  # noqa: E402

# Longest sides of web images as search engines return them: mostly 600-2000 px.
SIDES = (480, 640, 800, 1000, 1200, 1280, 1600, 1920, 2048, 2400)
ASPECTS = (4 / 3, 3 / 2, 16 / 9, 1.0, 3 / 4, 2 / 3)


def make_file(index: int) -> tuple[str, bytes]:
    """One photo-like file: smooth structure plus grain, so JPEG sizes are realistic."""
    rng = random.Random(index)
    side, aspect = rng.choice(SIDES), rng.choice(ASPECTS)
    size = (side, round(side / aspect)) if aspect >= 1 else (round(side * aspect), side)
    # A tiny random picture blown up: every file distinct in structure (and in pHash).
    blobs = Image.frombytes("RGB", (8, 6), rng.randbytes(8 * 6 * 3))
    image = Image.blend(blobs.resize(size, Image.Resampling.BICUBIC), _grain(size, rng), 0.12)
    kind = rng.random()
    buffer = io.BytesIO()
    if kind < 0.85:
        image.save(buffer, "JPEG", quality=rng.choice((75, 85, 92)))
        name = f"{index:05d}.jpg"
    elif kind < 0.95:
        image.resize((size[0] // 2, size[1] // 2)).save(buffer, "PNG", compress_level=6)
        name = f"{index:05d}.png"
    else:
        image.save(buffer, "WEBP", quality=80)
        name = f"{index:05d}.webp"
    data = buffer.getvalue()
    if rng.random() < 0.02:
        data = data[: len(data) // 2]  # a truncated download
    return name, data


_GRAIN: list[Image.Image] = []


def _grain(size: tuple[int, int], rng: random.Random) -> Image.Image:
    if not _GRAIN:
        side = max(SIDES)
        _GRAIN.append(Image.merge("RGB", [Image.effect_noise((side, side), 40) for _ in "RGB"]))
    x, y = rng.randrange(max(SIDES) - size[0] + 1), rng.randrange(max(SIDES) - size[1] + 1)
    return _GRAIN[0].crop((x, y, x + size[0], y + size[1]))


def generate(folder: Path, count: int) -> list[Path]:
    """The corpus in ``folder``; files already there (same names, same seeds) are kept."""
    from concurrent.futures import ProcessPoolExecutor

    folder.mkdir(parents=True, exist_ok=True)
    existing = {p.stem: p for p in folder.iterdir()}
    missing = [i for i in range(count) if f"{i:05d}" not in existing]
    with ProcessPoolExecutor() as pool:
        for name, data in pool.map(make_file, missing, chunksize=16):
            (folder / name).write_bytes(data)
            existing[name.split(".")[0]] = folder / name
    return [existing[f"{i:05d}"] for i in range(count)]


@dataclass
class Side:
    """The best round of one side: images/s and CPU ms an image."""

    speed: float = 0.0
    cpu_ms: float | None = None

    def update(self, images: int, seconds: float, cpu_ms: float | None) -> None:
        if images / seconds > self.speed:
            self.speed, self.cpu_ms = images / seconds, cpu_ms

    def ms(self) -> str:
        return "n/a" if self.cpu_ms is None else f"{self.cpu_ms:.1f}"


def run_winnow(paths: list[Path], folder: Path) -> tuple[float, dict[str, object]]:
    from core.config import Settings
    from core.db import Base, make_engine, make_session_factory, transaction
    from core.ingest import Provenance, add_image, class_by_name
    from core.store import LocalStore
    from core.tables import Job, Project
    from workers.runner import JobContext
    from workers.verify.job import verify_job

    settings = Settings(data_dir=folder, secret_key="bench")
    folder.mkdir(parents=True)
    engine = make_engine(settings.db_url)
    Base.metadata.create_all(engine)
    factory = make_session_factory(engine)
    store = LocalStore(folder)
    with transaction(factory) as s:
        project = Project(name="bench")
        s.add(project)
        s.flush()
        label = class_by_name(s, project.id, "things", create=True)
        for path in paths:
            add_image(
                s, store, project.id, path.read_bytes(), label.id, Provenance(filename=path.name)
            )
        job = Job(project_id=project.id, kind="verify", params={})
        s.add(job)
        s.flush()
        ctx = JobContext(job.id, project.id, {}, settings, store, factory)
    started = time.perf_counter()
    result = verify_job(ctx)
    seconds = time.perf_counter() - started
    engine.dispose()
    return seconds, result


def fastai_round(paths: list[Path], dest: Path, lesson: Side, same: Side) -> str:
    """verify_images, then resize_images(max_size=512), each timed; the best rounds kept."""
    from fastai.vision.utils import verify_images

    n = len(paths)
    clock = CpuClock().start()
    started = time.perf_counter()
    failed = verify_images(paths)
    verified = time.perf_counter() - started
    lesson.update(n, verified, clock.ms_per(n))
    resized = normalise(paths[0].parent, dest)
    same.update(n, verified + resized, clock.ms_per(n))
    clock.stop()
    return (
        f"{verified:6.2f} s verify_images ({n / verified:7.1f} img/s) + {resized:6.2f} s "
        f"resize_images(max_size=512) = {n / (verified + resized):6.1f} img/s, "
        f"failed={len(failed)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="300 files, one round")
    parser.add_argument("--corpus", type=Path, help="Keep the generated files here for reruns.")
    args = parser.parse_args()
    if args.quick:
        args.files, args.rounds = 300, 1
    ensure_bench_extra()
    cpus = len(os.sched_getaffinity(0))
    lesson, same, winnow = Side(), Side(), Side()
    with tempfile.TemporaryDirectory(prefix="winnow-bench-") as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        paths = generate(args.corpus or folder / "files", args.files)
        megabytes = sum(p.stat().st_size for p in paths) / 1e6
        print(
            f"{len(paths)} files, {megabytes:.0f} MB, generated in "
            f"{time.perf_counter() - started:.1f} s; {cpus} CPUs"
        )
        for round_ in range(args.rounds):
            line = fastai_round(paths, folder / f"resized-{round_}", lesson, same)
            print(f"fastai round {round_ + 1}: {line}")
            clock = CpuClock().start()
            seconds, result = run_winnow(paths, folder / f"winnow-{round_}")
            winnow.update(len(paths), seconds, clock.ms_per(len(paths)))
            clock.stop()
            print(
                f"winnow round {round_ + 1}: {seconds:6.2f} s verify_job "
                f"({len(paths) / seconds:7.1f} img/s) ok={result['ok']} "
                f"rejected={result['rejected_by_reason']} groups={result['duplicate_groups']}"
            )
    print(
        f"RESULT verify winnow={winnow.speed:.1f} anchor={lesson.speed:.1f} unit=img/s "
        f"ratio={winnow.speed / lesson.speed:.2f} ratio_same_work={winnow.speed / same.speed:.2f} "
        f"anchor_same_work={same.speed:.1f} winnow_cpu_ms_per_image={winnow.ms()} "
        f"anchor_cpu_ms_per_image={lesson.ms()} anchor_same_work_cpu_ms_per_image={same.ms()}"
    )


if __name__ == "__main__":
    main()
