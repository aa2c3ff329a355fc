"""Winnow's train job against fastai's fine_tune, the same network on the same images, on the CPU.

Both sides train one network: torchvision's resnet18 with one linear layer after the
pooling (Winnow's model, workers/training/model.py), built by the same function from the
same seed (random initialisation: no weights can be downloaded here), and the bench checks
that both start from the same state dict. fastai gets it as a plain ``Learner`` model split
into its resnet layer groups, so ``fine_tune`` freezes and unfreezes it as
``vision_learner`` would. Winnow's head, not fastai's default (BatchNorm, dropout, two
linear layers): it is the model Winnow exports, and comparing one network is the point.

Same images and validation split (Winnow's hash of each file), ImageNet normalisation on
both sides (fastai's ``Normalize`` in the DataBlock's batch_tfms), the same augmentation
family (random resized crop at min_scale 0.35, then fastai's ``aug_transforms`` defaults;
Winnow's batch Warp + Lighting reproduce them), image size, batch size, learning rate,
one frozen epoch and the same unfrozen epochs. fastai runs with its bar and logging off.
Each run is a fresh process, and the two alternate so that a shared machine's load falls
on both alike.

Two ratios, fastai's seconds / Winnow's seconds:

- ``ratio``: the unfrozen epochs only, the same work on both sides (per-epoch times from a
  fastai callback and from Winnow's own epoch metrics; each includes the validation pass).
- ``ratio_end_to_end``: from image files on disk to a trained model saved to disk: fastai's
  dataloaders + fine_tune + export against Winnow's whole train job (decode into memory,
  body features, its frozen stage as a head fit on those cached features, the unfrozen
  epochs, interpretation with Grad-CAM, ONNX export).

Before RESULT it checks accuracy parity: both median final errors under 0.15 and within
0.05 of each other; otherwise it prints ``RESULT invalid`` with each run's per-epoch errors
and exits non-zero. Speed bought with accuracy is not a win.

    .venv/bin/python bench/train.py            # 3 seeds, 1,000 images: a few minutes on 2 cores
    .venv/bin/python bench/train.py --quick    # 1 seed, 400 images: proves it runs
"""

from __future__ import annotations

import argparse
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

ARCH = "resnet18"
MAX_ERROR = 0.15
MAX_GAP = 0.05


def initial_model(seed: int, classes: int) -> tuple[Any, str]:
    """Winnow's network as its train job builds it (same seed, same function) and a digest
    of its initial state dict."""
    import hashlib

    import torch

    from workers.training.model import build_model

    torch.manual_seed(seed)
    model = build_model(ARCH, classes, pretrained=False).model
    digest = hashlib.sha256()
    for key, value in model.state_dict().items():
        digest.update(key.encode())
        digest.update(value.cpu().numpy().tobytes())
    return model, digest.hexdigest()[:16]


def resnet_split(model: Any) -> list[Any]:
    """vision_learner's resnet layer groups: stem to layer2, layer3 and layer4, the head."""
    from fastai.vision.all import params

    return [params(model[0][:6]), params(model[0][6:]), params(model[1])]


def run_fastai(args: argparse.Namespace) -> dict[str, Any]:
    import hashlib

    import torch
    from fastai.vision.all import (
        Callback,
        CategoryBlock,
        CrossEntropyLossFlat,
        DataBlock,
        FuncSplitter,
        ImageBlock,
        Learner,
        Normalize,
        RandomResizedCrop,
        Recorder,
        aug_transforms,
        error_rate,
        get_image_files,
        imagenet_stats,
        parent_label,
        set_seed,
    )
    from torch import nn

    from workers.training.data import in_validation

    class EpochTimes(Callback):  # type: ignore[misc]
        """Wall seconds and error rate of each epoch (training and validation pass), over
        both of fine_tune's fits (the Recorder starts afresh with each)."""

        order = Recorder.order + 1

        def __init__(self) -> None:
            self.seconds: list[float] = []
            self.errors: list[float] = []

        def before_epoch(self) -> None:
            self.started = time.perf_counter()

        def after_epoch(self) -> None:
            self.seconds.append(time.perf_counter() - self.started)
            self.errors.append(float(self.learn.recorder.values[-1][2]))

    set_seed(args.seed)
    torch.set_num_threads(args.threads)

    def is_valid(path: Path) -> bool:
        sha = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        return in_validation(args.seed, sha, 0.2)

    started = time.perf_counter()
    block = DataBlock(
        blocks=(ImageBlock, CategoryBlock),
        get_items=get_image_files,
        splitter=FuncSplitter(is_valid),
        get_y=parent_label,
        item_tfms=RandomResizedCrop(args.size, min_scale=0.35),
        batch_tfms=[*aug_transforms(), Normalize.from_stats(*imagenet_stats)],
    )
    dls = block.dataloaders(args.data, bs=args.bs, num_workers=0, device=torch.device("cpu"))
    resnet, init = initial_model(args.seed, len(dls.vocab))
    body = nn.Sequential(*(getattr(resnet, n) for n in ("conv1", "bn1", "relu", "maxpool")))
    body.extend(getattr(resnet, f"layer{i}") for i in range(1, 5))
    model = nn.Sequential(body, nn.Sequential(resnet.avgpool, nn.Flatten(), resnet.fc))
    times = EpochTimes()
    learn = Learner(
        dls,
        model,
        loss_func=CrossEntropyLossFlat(),
        metrics=error_rate,
        # vision_learner's resnet split: stem to layer2, layer3 to layer4, head.
        splitter=resnet_split,
        cbs=times,
        path=Path(tempfile.mkdtemp(prefix="fastai-bench-")),
    )
    with learn.no_bar(), learn.no_logging():
        learn.fine_tune(args.epochs, base_lr=args.lr, freeze_epochs=1)
    end_to_end = time.perf_counter() - started
    learn.remove_cb(times)  # a callback of this function's own: not picklable
    learn.export("model.pkl")
    whole_job = time.perf_counter() - started
    return {
        "init": init,
        "n_train": len(dls.train_ds),
        "n_valid": len(dls.valid_ds),
        "epochs": [
            {"stage": "frozen" if i == 0 else "unfrozen", "seconds": s, "error": e}
            for i, (s, e) in enumerate(zip(times.seconds, times.errors, strict=True))
        ],
        "end_to_end": end_to_end,
        "whole_job": whole_job,
    }


def run_winnow(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from sqlalchemy.orm import Session
    from synthetic import job_context, winnow_project

    import workers.train
    from core.db import make_engine
    from core.tables import ModelVersion
    from workers.train import train_job

    # The job's last step (confusion matrix, Grad-CAM of the top losses, safetensors and
    # ONNX export) is work fastai's side does not do: timed apart.
    exporting: list[float] = []
    interpret_and_export = workers.train._interpret_and_export

    def timed(*args: Any) -> Any:
        started = time.perf_counter()
        try:
            return interpret_and_export(*args)
        finally:
            exporting.append(time.perf_counter() - started)

    workers.train._interpret_and_export = timed
    torch.set_num_threads(args.threads)
    paths = sorted(Path(args.data).rglob("*.jpg"))
    classes = len({p.parent.name for p in paths})
    _, init = initial_model(args.seed, classes)
    with tempfile.TemporaryDirectory() as tmp:
        settings, project_id = winnow_project(Path(tmp) / "data", paths)
        params = {
            "arch": ARCH,
            "pretrained": False,
            "image_size": args.size,
            "batch_size": args.bs,
            "epochs": args.epochs,
            "freeze_epochs": 1,
            "lr": args.lr,
            "seed": args.seed,
        }
        ctx = job_context(settings, project_id, "train", params)
        started = time.perf_counter()
        result = train_job(ctx)
        whole_job = time.perf_counter() - started
        with Session(make_engine(settings.db_url)) as s:
            version = s.get(ModelVersion, result["model_version_id"])
            assert version is not None
            metrics, n_train, n_valid = version.metrics, version.num_train, version.num_valid
    return {
        "init": init,
        "n_train": n_train,
        "n_valid": n_valid,
        "epochs": [
            {"stage": m["stage"], "seconds": m["seconds"], "error": m["error_rate"]}
            for m in metrics
        ],
        "end_to_end": whole_job - sum(exporting),
        "whole_job": whole_job,
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


def unfrozen_seconds(run: dict[str, Any]) -> float:
    return sum(e["seconds"] for e in run["epochs"] if e["stage"] == "unfrozen")


def describe(which: str, seed: int, run: dict[str, Any]) -> str:
    epochs = " ".join(f"{e['seconds']:.1f}s/{e['error']:.3f}" for e in run["epochs"])
    return (
        f"seed {seed} {which:7s} unfrozen {unfrozen_seconds(run):6.1f} s, to trained "
        f"{run['end_to_end']:6.1f} s, saved {run['whole_job']:6.1f} s; "
        f"per epoch (seconds/error, frozen first): {epochs}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=250)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3, help="unfrozen epochs")
    parser.add_argument("--bs", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="1 seed, 100 images a class")
    parser.add_argument("--one", choices=["fastai", "winnow"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path)
    args = parser.parse_args()
    if args.one:
        sys.path.insert(0, str(HERE.parent))
        result = run_fastai(args) if args.one == "fastai" else run_winnow(args)
        print(json.dumps(result))
        return
    if args.quick:
        args.per_class, args.seeds = 100, 1

    ensure_bench_extra()
    runs: dict[str, list[dict[str, Any]]] = {"fastai": [], "winnow": []}
    with tempfile.TemporaryDirectory() as tmp:
        args.data = Path(tmp) / "images"
        paths = write_folder(args.data, args.per_class, int(args.size * 1.5))
        print(
            f"{len(paths)} images, {args.size}px, {ARCH} from the same random initialisation, "
            f"1 frozen + {args.epochs} epochs, bs {args.bs}, lr {args.lr}, {args.threads} threads"
        )
        for seed in range(args.seeds):
            order = ("fastai", "winnow") if seed % 2 == 0 else ("winnow", "fastai")
            for which in order:
                run = child(args, which, seed)
                runs[which].append(run)
                print(describe(which, seed, run), flush=True)
            fastai, winnow = runs["fastai"][-1], runs["winnow"][-1]
            assert fastai["init"] == winnow["init"], "the two sides started from different weights"
            assert (fastai["n_train"], fastai["n_valid"]) == (winnow["n_train"], winnow["n_valid"])
    sides = runs["fastai"][0]
    print(f"{sides['n_train']} training and {sides['n_valid']} validation images a run")
    error = {k: statistics.median(r["epochs"][-1]["error"] for r in v) for k, v in runs.items()}
    parity = max(error.values()) < MAX_ERROR and abs(error["fastai"] - error["winnow"]) <= MAX_GAP
    if not parity:
        for which, side in runs.items():
            for seed, run in enumerate(side):
                print(f"{which} seed {seed} errors: {[e['error'] for e in run['epochs']]}")
        print(
            f"RESULT invalid winnow_error={error['winnow']:.3f} anchor_error={error['fastai']:.3f}"
            f" (parity: both under {MAX_ERROR}, within {MAX_GAP})"
        )
        raise SystemExit(1)
    unfrozen = {k: statistics.median(unfrozen_seconds(r) for r in v) for k, v in runs.items()}
    trained = {k: statistics.median(r["end_to_end"] for r in v) for k, v in runs.items()}
    job = {k: statistics.median(r["whole_job"] for r in v) for k, v in runs.items()}
    print(
        f"files to trained weights (Winnow's cached frozen stage included): winnow "
        f"{trained['winnow']:.2f} s, fastai {trained['fastai']:.2f} s; with the model saved "
        f"(Winnow: interpretation, Grad-CAM, safetensors and ONNX; fastai: learn.export) "
        f"winnow {job['winnow']:.2f} s, fastai {job['fastai']:.2f} s"
    )
    print(
        f"RESULT train winnow={unfrozen['winnow']:.2f} anchor={unfrozen['fastai']:.2f} unit=s "
        f"ratio={unfrozen['fastai'] / unfrozen['winnow']:.2f} "
        f"ratio_end_to_end={trained['fastai'] / trained['winnow']:.2f} "
        f"ratio_whole_job={job['fastai'] / job['winnow']:.2f} "
        f"winnow_error={error['winnow']:.3f} anchor_error={error['fastai']:.3f}"
    )


if __name__ == "__main__":
    main()
