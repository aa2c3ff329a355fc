"""The lesson end to end, the number a user feels: from a list of image URLs to a trained model.

A local server (its own process, bench/ingest.py's: 20 ms latency on every request, 16
loopback addresses) serves generated JPEGs of realistic sizes (300-1600 px wide), one class
per hue (bench/synthetic.py's learnable images: a shape in the class's hue on a noisy grey
background), about 5% of them broken (truncated, HTML saved as .jpg, random bytes). Both
sides get the same URL list per class and train the same network with the same recipe as
bench/train.py (resnet18 with Winnow's head from the same random initialisation, the same
validation split, image size, normalisation, augmentation, batch size, learning rate, one
frozen epoch and the same unfrozen epochs):

- fastai (the anchor), the lesson's steps in one process: ``download_images`` into a folder
  per class, ``verify_images`` and unlinking the failures, then bench/train.py's fastai
  side: a DataBlock over the folders (``parent_label``), ``fine_tune``, ``learn.export``.
- Winnow, over its REST API only, against ``winnow serve`` (the API and one worker on the
  embedded SQLite default, its own data directory, WINNOW_FETCH_ALLOW for the loopback
  server): a token, a project with its classes, an ``import_urls`` job with every class's
  URLs (it verifies while it downloads: decode in isolated children, normalised copy,
  thumbnail, duplicates), a ``train`` job with the same recipe (its last step is Winnow's
  interpretation, Grad-CAM and ONNX export), then the model's error from
  ``GET /api/projects/{id}/models``.

Timed on each side from the first download (fastai) or the first request (Winnow) until the
model is trained and saved. Image generation, imports and server start-up (until the worker
says it is ready) are outside the timing. Before RESULT it checks accuracy parity: both
errors under 0.15 and within 0.05 of each other (Winnow's: the model it keeps, its best
epoch; fastai's: its last epoch), else ``RESULT invalid`` with both sides' per-epoch errors
and exit status 1. Each side's line says its own CPU seconds and those of other work on the
machine meanwhile: on two shared cores, other work slows either side several times over.
``--quick`` (300 images, 1 unfrozen epoch) only proves that it runs: its errors are printed,
not held to parity.

    .venv/bin/python bench/lesson.py            # 2,000 images: several minutes on 2 cores
    .venv/bin/python bench/lesson.py --quick    # 300 images: about two minutes
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import random
import re
import shutil
import sys
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for path in (HERE, ROOT):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from cputime import TICKS, CpuClock  # noqa: E402
from extra import ensure_bench_extra  # noqa: E402
from ingest import cpu_ticks, make_image, start_server  # noqa: E402
from synthetic import CLASSES, jpeg  # noqa: E402

MAX_ERROR = 0.15
MAX_GAP = 0.05
PASSWORD = "lesson-bench-password"


def class_of(index: int, classes: int) -> str:
    return CLASSES[index % classes]


def _write_one(job: tuple[Path, int, int, int, float]) -> bool:
    """One served file: a learnable image 300-1600 px wide, or (share ``broken``) a broken
    file of bench/ingest.py's kinds. True when broken."""
    folder, index, classes, seed, broken = job
    rng = random.Random(seed * 1_000_003 + index)
    if rng.random() < broken:
        data, bad = make_image(index, seed, broken=1.0), True
    else:
        data, bad = jpeg(class_of(index, classes), rng, rng.randrange(300, 1201)), False
    (folder / f"{index:05d}.jpg").write_bytes(data)
    return bad


def generate(folder: Path, count: int, classes: int, seed: int, broken: float) -> int:
    """Write the served files once (a folder holding all of them is reused); how many are
    broken."""
    done = folder / ".complete"
    if done.exists():
        return int(done.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    jobs = [(folder, i, classes, seed, broken) for i in range(count)]
    with ProcessPoolExecutor() as pool:
        bad = sum(pool.map(_write_one, jobs, chunksize=16))
    done.write_text(str(bad))
    return bad


@dataclass
class Side:
    seconds: float = 0.0
    steps: list[str] = field(default_factory=list)
    errors: list[float] = field(default_factory=list)  # per epoch, frozen first
    error: float = 1.0  # of the model the side ends with
    n_train: int = 0
    n_valid: int = 0
    kept: int = 0
    cpu: float | None = None  # CPU seconds of the side's processes
    others: float | None = None  # CPU seconds of everything else on the machine meanwhile

    def line(self, name: str) -> str:
        errors = " ".join(f"{e:.3f}" for e in self.errors)
        return (
            f"{name}: {self.seconds:.1f} s ({' + '.join(self.steps)}); {self.kept} images kept, "
            f"{self.n_train} train / {self.n_valid} valid; error {self.error:.3f} "
            f"(per epoch, frozen first: {errors}); {_s(self.cpu)} CPU-s of its own, "
            f"{_s(self.others)} CPU-s of other work on the machine meanwhile"
        )


def _s(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"


class Meter:
    """CPU seconds of this process's tree (the bench's image server left out) and of the
    rest of the machine: a side competing with other work for two cores is slower."""

    def __init__(self, server: int) -> None:
        self.ticks = cpu_ticks()
        self.clock = CpuClock(exclude=[server]).start()

    def stop(self, side: Side) -> None:
        side.cpu = self.clock.seconds()
        self.clock.stop()
        end = cpu_ticks()
        if side.cpu is not None and self.ticks is not None and end is not None:
            side.others = max(0.0, (end[0] - self.ticks[0]) / TICKS - side.cpu)


def train_args(args: argparse.Namespace, data: Path) -> argparse.Namespace:
    """bench/train.py's arguments for its fastai side."""
    return argparse.Namespace(
        data=data, seed=args.seed, threads=args.threads, size=args.size, bs=args.bs,
        lr=args.lr, epochs=args.epochs,
    )  # fmt: skip


def run_fastai(
    args: argparse.Namespace, urls: dict[str, list[str]], dest: Path, server: int
) -> Side:
    from fastai.vision.all import download_images, get_image_files, verify_images
    from train import run_fastai as fine_tune

    side = Side()
    dest.mkdir(parents=True)
    meter = Meter(server)
    # fastprogress draws bars on stdout; the timing does not need them.
    with contextlib.redirect_stdout(io.StringIO()):
        started = time.perf_counter()
        for name, class_urls in urls.items():
            download_images(dest / name, urls=class_urls)
        downloaded = time.perf_counter()
        failed = verify_images(get_image_files(dest))
        failed.map(Path.unlink)
        verified = time.perf_counter()
        trained = fine_tune(train_args(args, dest))
        side.seconds = time.perf_counter() - started
    meter.stop(side)
    epochs = trained["epochs"]
    side.steps = [
        f"{downloaded - started:.1f} s download_images",
        f"{verified - downloaded:.1f} s verify_images",
        f"{trained['whole_job'] - sum(e['seconds'] for e in epochs):.1f} s dataloaders, "
        "model and export",
        f"{sum(e['seconds'] for e in epochs):.1f} s fine_tune's {len(epochs)} epochs",
    ]
    side.errors = [e["error"] for e in epochs]
    side.error = side.errors[-1]
    side.n_train, side.n_valid = trained["n_train"], trained["n_valid"]
    side.kept = len(get_image_files(dest))
    return side


class Api:
    def __init__(self, base: str) -> None:
        import httpx

        self.client = httpx.Client(base_url=base, timeout=120)

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.client.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise SystemExit(f"{method} {path}: {response.status_code} {response.text[:2000]}")
        return response.json()

    def wait(self, project: int, job: int) -> dict[str, Any]:
        while True:
            found: dict[str, Any] = self.call("GET", f"/api/projects/{project}/jobs/{job}")
            if found["status"] == "succeeded":
                return found
            if found["status"] in ("failed", "cancelled"):
                raise SystemExit(f"job {job} ({found['kind']}) {found['status']}: {found['error']}")
            time.sleep(0.2)


def job_seconds(job: dict[str, Any]) -> float:
    from datetime import datetime

    started, finished = (datetime.fromisoformat(job[k]) for k in ("started_at", "finished_at"))
    return (finished - started).total_seconds()


def queued(job: dict[str, Any]) -> float:
    """Seconds from the job's creation until a worker started it."""
    from datetime import datetime

    created, started = (datetime.fromisoformat(job[k]) for k in ("created_at", "started_at"))
    return (started - created).total_seconds()


def wait_for_worker(serve: Any, timeout: float = 180) -> None:
    """Until the worker that `serve` started says it is ready (Celery's log line)."""
    deadline = time.monotonic() + timeout
    while not re.search(r"@\S+ ready\.", serve.log()):
        if time.monotonic() > deadline or serve.proc.poll() is not None:
            raise SystemExit(f"the worker did not start:\n{serve.log()[-3000:]}")
        time.sleep(0.2)


def run_winnow(
    args: argparse.Namespace, urls: dict[str, list[str]], work: Path, server: int
) -> Side:
    from tests.services import ServeProcess, winnow_env

    env = winnow_env(
        work / "data",
        # The bench server listens on several loopback addresses, as images come from many hosts.
        WINNOW_FETCH_ALLOW="127.0.0.0/8",
        WINNOW_ADMIN_PASSWORD=PASSWORD,
    )
    (work / "data").mkdir(parents=True)
    serve = ServeProcess(env, work / "serve.log")
    try:
        wait_for_worker(serve)
        api = Api(serve.url)
        side = Side()
        meter = Meter(server)
        started = time.perf_counter()
        token = api.call(
            "POST",
            "/api/auth/tokens",
            json={"username": "admin", "password": PASSWORD, "name": "lesson bench"},
        )["token"]
        api.client.headers["Authorization"] = f"Bearer {token}"
        project = api.call(
            "POST", "/api/projects", json={"name": "lesson", "classes": [{"name": n} for n in urls]}
        )["id"]
        jobs = f"/api/projects/{project}/jobs"
        items = [{"url": u, "label": name} for name, class_urls in urls.items() for u in class_urls]
        imported = api.wait(
            project,
            api.call("POST", jobs, json={"kind": "import_urls", "params": {"items": items}})["id"],
        )
        params = {
            "arch": "resnet18", "pretrained": False, "image_size": args.size,
            "batch_size": args.bs, "epochs": args.epochs, "freeze_epochs": 1, "lr": args.lr,
            "seed": args.seed,
        }  # fmt: skip
        trained = api.wait(
            project, api.call("POST", jobs, json={"kind": "train", "params": params})["id"]
        )
        models = api.call("GET", f"/api/projects/{project}/models")
        side.seconds = time.perf_counter() - started
        meter.stop(side)
        model = next(m for m in models if m["id"] == trained["result"]["model_version_id"])
        detail = api.call("GET", f"/api/projects/{project}/models/{model['id']}")
    finally:
        serve.stop()
    metrics = detail["metrics"]
    epochs = sum(m["seconds"] for m in metrics)
    verify = imported["result"]["verify"]
    fit = trained["result"]["seconds"]  # decoding, body features and the epochs
    waits = queued(imported) + queued(trained)
    side.steps = [
        f"{job_seconds(imported):.1f} s import_urls job (download and verify, overlapped)",
        f"{job_seconds(trained):.1f} s train job: {fit - epochs:.1f} s decoding into memory "
        f"and computing the body features, {epochs:.1f} s its {len(metrics)} epochs (the "
        "frozen one on those features), "
        f"{job_seconds(trained) - fit:.1f} s loading the split, building the model, "
        "interpretation with Grad-CAM and the safetensors and ONNX export",
        f"{waits:.1f} s the two jobs queued until the worker took them",
        f"{side.seconds - job_seconds(imported) - job_seconds(trained) - waits:.1f} s requests"
        " and polling",
    ]
    side.errors = [m["error_rate"] for m in metrics]
    side.error = model["error_rate"]  # the kept (best) epoch's, as the models list has it
    side.n_train, side.n_valid = model["num_train"], model["num_valid"]
    side.kept = verify["ok"]
    print(
        f"winnow import: {imported['result']['downloaded']} stored, "
        f"{imported['result']['failures_by_reason']}; verify rejected: "
        f"{verify['rejected_by_reason']}",
        flush=True,
    )
    return side


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--classes", type=int, default=3, choices=range(2, len(CLASSES) + 1))
    parser.add_argument("--latency", type=float, default=0.02, help="seconds per request")
    parser.add_argument("--broken", type=float, default=0.05, help="share of broken files")
    parser.add_argument("--hosts", type=int, default=16, help="loopback addresses serving")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3, help="unfrozen epochs")
    parser.add_argument("--bs", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--threads", type=int, default=2, help="torch threads, fastai's side")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--cache", type=Path, default=Path(tempfile.gettempdir()) / "winnow-bench-lesson"
    )
    parser.add_argument("--quick", action="store_true", help="300 images, 1 unfrozen epoch")
    args = parser.parse_args()
    if args.quick:
        args.images, args.epochs = 300, 1

    ensure_bench_extra()
    # torch and fastai warn about their own deprecations on import; not this bench's business.
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    folder = args.cache / f"n{args.images}-c{args.classes}-s{args.seed}-b{args.broken:g}"
    print(f"generating {args.images} images in {folder} ...", flush=True)
    broken = generate(folder, args.images, args.classes, args.seed, args.broken)
    print(
        f"{args.images} URLs in {args.classes} classes ({broken} broken files), "
        f"{args.latency * 1000:.0f} ms latency; resnet18 from the same random initialisation, "
        f"{args.size} px, 1 frozen + {args.epochs} epochs, bs {args.bs}, lr {args.lr}",
        flush=True,
    )
    server, hosts = start_server(folder, args.latency, args.hosts)
    work = Path(tempfile.mkdtemp(prefix="winnow-lesson-"))
    try:
        urls: dict[str, list[str]] = {class_of(c, args.classes): [] for c in range(args.classes)}
        for i in range(args.images):
            urls[class_of(i, args.classes)].append(f"http://{hosts[i % len(hosts)]}/{i:05d}.jpg")
        # Imported up front so that the anchor's timing does not include importing torch.
        import fastai.vision.all  # noqa: F401

        anchor = run_fastai(args, urls, work / "fastai", server.pid)
        print(anchor.line("fastai"), flush=True)
        winnow = run_winnow(args, urls, work / "winnow", server.pid)
        print(winnow.line("winnow"), flush=True)
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)

    extra = (
        f"winnow_error={winnow.error:.3f} anchor_error={anchor.error:.3f} images={args.images} "
        f"broken={broken} winnow_kept={winnow.kept} anchor_kept={anchor.kept} "
        f"winnow_cpu_s={_s(winnow.cpu)} anchor_cpu_s={_s(anchor.cpu)} "
        f"others_cpu_s_during_winnow={_s(winnow.others)} "
        f"others_cpu_s_during_anchor={_s(anchor.others)} cpus={os.cpu_count()}"
    )
    parity = max(winnow.error, anchor.error) < MAX_ERROR
    parity = parity and abs(winnow.error - anchor.error) <= MAX_GAP
    if not parity and not args.quick:
        print(f"winnow errors per epoch: {winnow.errors}")
        print(f"fastai errors per epoch: {anchor.errors}")
        print(f"RESULT invalid {extra} (parity: both under {MAX_ERROR}, within {MAX_GAP})")
        raise SystemExit(1)
    print(
        f"RESULT lesson winnow={winnow.seconds:.1f} anchor={anchor.seconds:.1f} unit=s "
        f"ratio={anchor.seconds / winnow.seconds:.2f} {extra}"
    )


if __name__ == "__main__":
    main()
