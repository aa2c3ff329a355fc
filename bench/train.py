"""Winnow's train job against fastai's vision_learner + fine_tune, side by side on the CPU.

Same generated images, same validation split (Winnow's hash of each file), same
architecture (resnet18 from random initialisation: no weights can be downloaded here),
image size, batch size, learning rate and epochs. Each run is a fresh process and the
two frameworks alternate, so that the load of a shared machine falls on both alike.

images/s = training images x epochs (frozen + unfrozen) / wall seconds of the fit,
including decoding, augmentation and the validation passes, excluding export.
error = the error rate on the validation set after the last epoch.

    .venv/bin/python bench/train.py            # 3 seeds, a few minutes on 2 cores
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
from synthetic import write_folder  # noqa: E402


def run_fastai(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from fastai.vision.all import (
        CategoryBlock,
        DataBlock,
        FuncSplitter,
        ImageBlock,
        RandomResizedCrop,
        aug_transforms,
        error_rate,
        get_image_files,
        parent_label,
        resnet18,
        set_seed,
        vision_learner,
    )

    from workers.training.data import in_validation

    set_seed(args.seed)
    torch.set_num_threads(args.threads)

    def is_valid(path: Path) -> bool:
        sha = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        return in_validation(args.seed, sha, 0.2)

    block = DataBlock(
        blocks=(ImageBlock, CategoryBlock),
        get_items=get_image_files,
        splitter=FuncSplitter(is_valid),
        get_y=parent_label,
        item_tfms=RandomResizedCrop(args.size, min_scale=0.35),
        batch_tfms=aug_transforms(),
    )
    dls = block.dataloaders(args.data, bs=args.bs, num_workers=0, device=torch.device("cpu"))
    learn = vision_learner(dls, resnet18, metrics=error_rate, pretrained=False)
    learn.no_bar()
    learn.no_logging()
    start = time.perf_counter()
    learn.fine_tune(args.epochs, base_lr=args.lr, freeze_epochs=1)
    seconds = time.perf_counter() - start
    n_train = len(dls.train_ds)
    error = float(learn.recorder.values[-1][2])
    return {
        "seconds": seconds,
        "n_train": n_train,
        "error": error,
        "images_per_second": n_train * (args.epochs + 1) / seconds,
    }


def run_winnow(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from sqlalchemy.orm import Session
    from synthetic import job_context, winnow_project

    from core.db import make_engine
    from core.tables import ModelVersion
    from workers.train import train_job

    torch.set_num_threads(args.threads)
    paths = sorted(Path(args.data).rglob("*.jpg"))
    with tempfile.TemporaryDirectory() as tmp:
        settings, project_id = winnow_project(Path(tmp) / "data", paths)
        params = {
            "arch": "resnet18",
            "pretrained": False,
            "image_size": args.size,
            "batch_size": args.bs,
            "epochs": args.epochs,
            "freeze_epochs": 1,
            "lr": args.lr,
            "seed": args.seed,
        }
        result = train_job(job_context(settings, project_id, "train", params))
        with Session(make_engine(settings.db_url)) as s:
            version = s.get(ModelVersion, result["model_version_id"])
            assert version is not None
            last = version.metrics[-1]
            n_train = version.num_train
    return {
        "seconds": result["seconds"],
        "n_train": n_train,
        "error": last["error_rate"],
        "best_error": result["error_rate"],
        "images_per_second": result["images_per_second"],
    }


def child(args: argparse.Namespace, which: str, seed: int) -> dict[str, Any]:
    command = [
        sys.executable, __file__, "--one", which, "--seed", str(seed), "--data", str(args.data),
        "--size", str(args.size), "--epochs", str(args.epochs), "--bs", str(args.bs),
        "--lr", str(args.lr), "--threads", str(args.threads),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, cwd=HERE.parent)
    if done.returncode != 0:
        raise SystemExit(f"{which} seed {seed} failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=80)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--bs", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--one", choices=["fastai", "winnow"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path)
    args = parser.parse_args()
    if args.one:
        sys.path.insert(0, str(HERE.parent))
        result = run_fastai(args) if args.one == "fastai" else run_winnow(args)
        print(json.dumps(result))
        return

    ensure_bench_extra()
    with tempfile.TemporaryDirectory() as tmp:
        args.data = Path(tmp) / "images"
        paths = write_folder(args.data, args.per_class, int(args.size * 1.5))
        print(
            f"{len(paths)} images, {args.size}px, resnet18 from scratch, 1 frozen + "
            f"{args.epochs} epochs, bs {args.bs}, lr {args.lr}, {args.threads} threads"
        )
        runs: dict[str, list[dict[str, Any]]] = {"fastai": [], "winnow": []}
        for seed in range(args.seeds):
            order = ("fastai", "winnow") if seed % 2 == 0 else ("winnow", "fastai")
            for which in order:
                run = child(args, which, seed)
                runs[which].append(run)
                print(
                    f"seed {seed} {which:7s} {run['images_per_second']:7.1f} img/s "
                    f"{run['seconds']:6.1f} s  error {run['error']:.3f}",
                    flush=True,
                )
    speed = {k: statistics.median(r["images_per_second"] for r in v) for k, v in runs.items()}
    error = {k: statistics.median(r["error"] for r in v) for k, v in runs.items()}
    ratio = speed["winnow"] / speed["fastai"]
    print(
        f"RESULT train winnow={speed['winnow']:.1f} anchor={speed['fastai']:.1f} unit=img/s "
        f"ratio={ratio:.2f} winnow_error={error['winnow']:.3f} anchor_error={error['fastai']:.3f}"
    )


if __name__ == "__main__":
    main()
