"""Export of a trained model: safetensors weights, JSON metadata and ONNX.

The weights are a plain torchvision state dict (no pickle); the metadata says everything
needed to rebuild the model and to feed it, so that the API can predict through ONNX
Runtime without torch and a user can reload the model in plain torchvision.
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path
from typing import Any

import torch
import torchvision
from safetensors.torch import save_file
from torch import nn

from core.preprocess import IMAGENET_MEAN, IMAGENET_STD
from workers.training.cam import WithCam

WEIGHTS = "weights.safetensors"
METADATA = "metadata.json"
ONNX = "model.onnx"


def metadata_for(
    arch: str, classes: list[str], image_size: int, extra: dict[str, Any]
) -> dict[str, Any]:
    return {
        "format": "winnow-model/1",
        "arch": arch,
        "classes": classes,
        "num_classes": len(classes),
        "image_size": image_size,
        "preprocess": (
            f"RGB; resize the shorter side to {image_size} (bilinear); centre crop "
            f"{image_size}x{image_size}; scale to [0, 1]; normalise per channel"
        ),
        "normalize": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
        "input": {"name": "image", "shape": ["batch", 3, image_size, image_size]},
        "output": {"name": "logits", "softmax": "apply to get probabilities"},
        "cam": {
            "name": "cam",
            "shape": ["batch", len(classes), "h", "w"],
            "meaning": (
                "per class, the last conv block's channels weighed by the gradient of the "
                "class's logit (Grad-CAM before its ReLU, times h*w); ReLU, scale to [0, 1] "
                "and resize to the input for a heatmap"
            ),
        },
        "torchvision": torchvision.__version__,
        "reload": (
            f"torchvision.models.get_model({arch!r}, num_classes={len(classes)})"
            f".load_state_dict(safetensors.torch.load_file({WEIGHTS!r}))"
        ),
        **extra,
    }


def export_onnx(model: nn.Module, arch: str, image_size: int, path: Path) -> None:
    """Two outputs: ``logits``, and ``cam`` for heatmaps without torch (training/cam.py)."""
    cpu_model = copy.deepcopy(model).float().cpu().eval()
    cpu_model = WithCam(cpu_model.to(memory_format=torch.contiguous_format), arch).eval()
    example = torch.zeros(2, 3, image_size, image_size)
    batch = torch.export.Dim("batch", min=1, max=4096)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            cpu_model,
            (example,),
            str(path),
            input_names=["image"],
            output_names=["logits", "cam"],
            dynamic_shapes=({0: batch},),
            # One self-contained file: the API loads it by path.
            external_data=False,
            verbose=False,
        )


def export_model(
    model: nn.Module,
    arch: str,
    classes: list[str],
    image_size: int,
    out_dir: Path,
    extra: dict[str, Any],
) -> dict[str, Path]:
    """Write the three files into ``out_dir``; return their paths by kind."""
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    # BatchNorm's num_batches_tracked is an integer; keep its dtype.
    for key, value in model.state_dict().items():
        if not value.is_floating_point():
            state[key] = value.detach().cpu().contiguous()
    metadata = metadata_for(arch, classes, image_size, extra)
    save_file(state, str(out_dir / WEIGHTS), metadata={"winnow": json.dumps(metadata)})
    (out_dir / METADATA).write_text(json.dumps(metadata, indent=2))
    export_onnx(model, arch, image_size, out_dir / ONNX)
    return {"weights": out_dir / WEIGHTS, "metadata": out_dir / METADATA, "onnx": out_dir / ONNX}
