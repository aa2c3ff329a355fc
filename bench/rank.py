"""Scoring every image by its loss ("top losses"): Winnow's rank job against fastai's
``get_preds(with_loss=True)``, the same weights on the same images, on the CPU.

One trained model (Winnow's train job, resnet18 from random initialisation: nothing can be
downloaded here) scores the same generated images (bench/synthetic.py) on both sides:

- fastai (the anchor): the lesson's way, a ``Learner`` around the same network with the same
  weights (checked by a digest), ``dls.test_dl(files, with_labels=True)`` with a centre crop
  at the model's size and ImageNet normalisation, then ``get_preds(dl=..., with_loss=True)``:
  files on disk to a loss per image, in memory.
- Winnow: the ``rank`` job, in sample: decode each stored image once, one pass through the
  model, the loss of each label, self-confidence, normalised margin and confident learning's
  flag, near-duplicate pairs by the penultimate features, and every score stored in the
  database: files on disk to rows a review page reads.

images/s = images / wall seconds of that whole step. The two rankings must agree (Spearman
correlation of the losses at least 0.95: the crops differ slightly, fastai resizing the
original and Winnow its stored 512 px copy) before a ratio is printed; otherwise the bench
prints ``RESULT invalid`` and exits non-zero. Each side runs in a fresh process, alternating,
and the median of the runs is reported.

    .venv/bin/python bench/rank.py            # 2,000 images, 3 runs a side: a few minutes
    .venv/bin/python bench/rank.py --quick    # 400 images, 1 run: proves it runs
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from extra import ensure_bench_extra  # noqa: E402

ARCH = "resnet18"
MIN_SPEARMAN = 0.95


def digest(state: dict[str, Any]) -> str:
    h = hashlib.sha256()
    for key, value in state.items():
        h.update(key.encode())
        h.update(value.cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def prepare(args: argparse.Namespace) -> None:
    """The images, a Winnow project holding them and a trained model: set-up, not timed."""
    import torch
    from synthetic import job_context, winnow_project, write_folder

    from workers.train import train_job

    torch.set_num_threads(args.threads)
    root = Path(args.work)
    paths = write_folder(root / "images", args.images // 4, args.source_size, seed=0)
    settings, project_id = winnow_project(root / "data", paths)
    params = {
        "arch": ARCH,
        "pretrained": False,
        "image_size": args.size,
        "batch_size": 32,
        "epochs": 1,
        "freeze_epochs": 1,
        "lr": 3e-3,
        "seed": 0,
    }
    result = train_job(job_context(settings, project_id, "train", params))
    meta = {"project_id": project_id, "model_version_id": result["model_version_id"]}
    (root / "setup.json").write_text(json.dumps(meta))


def _model(args: argparse.Namespace) -> tuple[Any, list[str], Path, int]:
    from safetensors.torch import load_file
    from sqlalchemy.orm import Session

    from core.config import Settings
    from core.db import make_engine
    from core.tables import ModelVersion
    from workers.training.model import build_model

    root = Path(args.work)
    meta = json.loads((root / "setup.json").read_text())
    settings = Settings(data_dir=root / "data", secret_key="bench")
    with Session(make_engine(settings.db_url)) as s:
        version = s.get(ModelVersion, meta["model_version_id"])
        assert version is not None
        classes, weights = list(version.classes), settings.data_dir / version.files["weights"]
    model = build_model(ARCH, len(classes), pretrained=False).model
    model.load_state_dict(load_file(str(weights)))
    return model, classes, root, meta["model_version_id"]


def run_fastai(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from fastai.vision.all import (
        CategoryBlock,
        CrossEntropyLossFlat,
        DataBlock,
        ImageBlock,
        Learner,
        Normalize,
        Resize,
        ResizeMethod,
        get_image_files,
        imagenet_stats,
        parent_label,
    )
    from torch import nn

    torch.set_num_threads(args.threads)
    resnet, classes, root, _ = _model(args)
    init = digest(resnet.state_dict())
    body = nn.Sequential(*(getattr(resnet, n) for n in ("conv1", "bn1", "relu", "maxpool")))
    body.extend(getattr(resnet, f"layer{i}") for i in range(1, 5))
    model = nn.Sequential(body, nn.Sequential(resnet.avgpool, nn.Flatten(), resnet.fc))
    files = sorted((root / "images").rglob("*.jpg"))
    started = time.perf_counter()
    block = DataBlock(
        # The model's own class order: fastai would sort a vocab it is given.
        blocks=(ImageBlock, CategoryBlock(vocab=classes, sort=False)),
        get_items=get_image_files,
        get_y=parent_label,
        item_tfms=Resize(args.size, method=ResizeMethod.Crop),
        batch_tfms=Normalize.from_stats(*imagenet_stats),
    )
    dls = block.dataloaders(root / "images", bs=64, num_workers=0, device=torch.device("cpu"))
    learn = Learner(dls, model, loss_func=CrossEntropyLossFlat())
    dl = dls.test_dl(files, with_labels=True)
    with learn.no_bar(), learn.no_logging():
        _, _, losses = learn.get_preds(dl=dl, with_loss=True)
    seconds = time.perf_counter() - started
    names = [f"{p.parent.name}/{p.name}" for p in files]
    return {
        "init": init,
        "seconds": seconds,
        "losses": dict(zip(names, losses.tolist(), strict=True)),
    }


def run_winnow(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from sqlalchemy import select
    from sqlalchemy.orm import Session
    from synthetic import job_context

    from core.config import Settings
    from core.db import make_engine
    from core.tables import Image, ImageClass, ImageScore
    from workers.rank import rank_job

    torch.set_num_threads(args.threads)
    resnet, _, root, model_id = _model(args)
    init = digest(resnet.state_dict())
    meta = json.loads((root / "setup.json").read_text())
    settings = Settings(data_dir=root / "data", secret_key="bench")
    ctx = job_context(settings, meta["project_id"], "rank", {"model_version_id": model_id})
    started = time.perf_counter()
    result = rank_job(ctx)
    seconds = time.perf_counter() - started
    with Session(make_engine(settings.db_url)) as s:
        rows = s.execute(
            select(ImageClass.name, Image.filename, ImageScore.loss)
            .join(Image, Image.id == ImageScore.image_id)
            .join(ImageClass, ImageClass.id == Image.label_id)
            .where(ImageScore.model_version_id == model_id, ImageScore.method == "in_sample")
        )
        losses = {f"{label}/{name}": loss for label, name, loss in rows}
    assert len(losses) == result["in_sample"]
    return {"init": init, "seconds": seconds, "losses": losses}


def spearman(a: list[float], b: list[float]) -> float:
    import numpy as np

    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def child(args: argparse.Namespace, which: str) -> dict[str, Any]:
    command = [
        sys.executable, __file__, "--one", which, "--work", args.work, "--size", str(args.size),
        "--threads", str(args.threads), "--images", str(args.images),
    ]  # fmt: skip
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--size", type=int, default=64, help="the model's image size")
    parser.add_argument("--source-size", type=int, default=160, help="generated image side")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", default="")
    parser.add_argument("--one", choices=["prepare", "fastai", "winnow"])
    args = parser.parse_args()
    if args.one:
        run = {"prepare": prepare, "fastai": run_fastai, "winnow": run_winnow}[args.one]
        print(json.dumps(run(args) or {}))
        return
    if args.quick:
        args.images, args.runs = 400, 1
    ensure_bench_extra()
    with tempfile.TemporaryDirectory(prefix="winnow-rank-bench-") as work:
        args.work = work
        print(f"preparing {args.images} images and a model (not timed) ...", flush=True)
        child(args, "prepare")
        runs: dict[str, list[dict[str, Any]]] = {"fastai": [], "winnow": []}
        for n in range(args.runs):
            for which in ("fastai", "winnow") if n % 2 == 0 else ("winnow", "fastai"):
                run = child(args, which)
                runs[which].append(run)
                rate = len(run["losses"]) / run["seconds"]
                print(f"{which} run {n + 1}: {run['seconds']:.2f} s, {rate:.0f} img/s", flush=True)
    fastai, winnow = runs["fastai"][-1], runs["winnow"][-1]
    assert fastai["init"] == winnow["init"], "both sides must score with the same weights"
    names = sorted(fastai["losses"])
    if sorted(winnow["losses"]) != names:
        print(f"RESULT invalid: fastai scored {len(names)} images, Winnow {len(winnow['losses'])}")
        sys.exit(1)
    rho = spearman([fastai["losses"][n] for n in names], [winnow["losses"][n] for n in names])
    print(f"Spearman correlation of the two sides' losses: {rho:.4f}")
    if rho < MIN_SPEARMAN:
        print(f"RESULT invalid: the rankings disagree (Spearman {rho:.3f} < {MIN_SPEARMAN})")
        sys.exit(1)
    rate = {
        which: statistics.median(len(r["losses"]) / r["seconds"] for r in side)
        for which, side in runs.items()
    }
    print(
        f"RESULT rank winnow={rate['winnow']:.1f} anchor={rate['fastai']:.1f} unit=img/s "
        f"ratio={rate['winnow'] / rate['fastai']:.2f} images={len(names)} spearman={rho:.4f}"
    )


if __name__ == "__main__":
    main()
