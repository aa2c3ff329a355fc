"""The CUDA path of training and ranking on a generated dataset; runs on the CPU too.

No database server: a SQLite Winnow in a temporary directory. Prints the device, the
timings and the images per second of lr_find, train (each architecture) and rank, and
checks that the ONNX export predicts what the trained model predicts.

    .venv/bin/python bench/gpu_check.py            # on a GPU machine
    .venv/bin/python bench/gpu_check.py --quick    # a smoke run (the default without CUDA)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from synthetic import job_context, winnow_project, write_folder  # noqa: E402


def main() -> None:
    import numpy as np
    import torch
    from safetensors.torch import load_file
    from sqlalchemy.orm import Session
    from torchvision import models

    from core.db import make_engine
    from core.predictor import load_predictor
    from core.preprocess import prepare
    from core.tables import ModelVersion
    from workers.rank import rank_job
    from workers.train import lr_find_job, train_job

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--per-class", type=int, default=250)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--archs", default="resnet18,resnet50,convnext_tiny,efficientnet_b0")
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    quick = args.quick or not cuda
    per_class, size = (12, 32) if quick else (args.per_class, args.size)
    archs = ["resnet18"] if quick else args.archs.split(",")
    device = torch.cuda.get_device_name(0) if cuda else "cpu"
    print(f"device: {device}; torch {torch.__version__}; quick={quick}", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        paths = write_folder(Path(tmp) / "images", per_class, int(size * 1.4))
        settings, project_id = winnow_project(Path(tmp) / "data", paths)
        print(f"{len(paths)} images of {size}px in 4 classes", flush=True)
        base = {"pretrained": False, "image_size": size, "batch_size": 64 if cuda else 8}

        start = time.perf_counter()
        found = lr_find_job(job_context(settings, project_id, "lr_find", base))
        print(
            f"lr_find: {time.perf_counter() - start:.1f} s on {found['device']}, "
            f"{len(found['lrs'])} steps, suggestions {found['suggestions']}",
            flush=True,
        )
        last: dict[str, object] = {}
        for arch in archs:
            params = {**base, "arch": arch, "epochs": 1 if quick else args.epochs, "lr": 2e-3}
            start = time.perf_counter()
            result = train_job(job_context(settings, project_id, "train", params))
            print(
                f"train {arch}: {result['images_per_second']} img/s training, "
                f"{result['seconds']} s fit, {time.perf_counter() - start:.1f} s with export; "
                f"error {result['error_rate']}, device {result['device']}, "
                f"advice {result['advice']}",
                flush=True,
            )
            last = result

        with Session(make_engine(settings.db_url)) as s:
            version = s.get(ModelVersion, last["model_version_id"])
            assert version is not None
            files = {k: settings.data_dir / v for k, v in version.files.items()}
            arch, classes = version.arch, list(version.classes)
        model = models.get_model(arch, num_classes=len(classes))
        model.load_state_dict(load_file(str(files["weights"])))
        model.eval()
        sample = [p.read_bytes() for p in paths[:: max(1, len(paths) // 16)]]
        batch = torch.from_numpy(np.stack([prepare(b, size) for b in sample]))
        with torch.inference_mode():
            expected = model(batch).softmax(1).numpy()
        predictor = load_predictor(files["onnx"], files["metadata"])
        got = np.stack([[p.probabilities[c] for c in classes] for p in predictor.predict(sample)])
        print(f"onnx vs torch: max probability difference {np.abs(got - expected).max():.2e}")

        start = time.perf_counter()
        ranked = rank_job(job_context(settings, project_id, "rank", {"out_of_fold": True}))
        seconds = time.perf_counter() - start
        print(
            f"rank: {seconds:.1f} s, {ranked['in_sample'] / seconds:.0f} img/s "
            f"(in sample + out of fold), {json.dumps(ranked)}",
            flush=True,
        )
    if cuda:
        print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
