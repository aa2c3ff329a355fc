"""Interpretation on the validation set, as in the lesson's ClassificationInterpretation.

Confusion matrix, most-confused pairs, per-class precision and recall, top losses, and a
Grad-CAM heatmap per top-loss image so that a person sees what the model looked at.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from core.heatmap import blend
from core.preprocess import center_crop, decode_rgb, normalise
from workers.training.data import Sample
from workers.training.fit import Evaluation
from workers.training.model import child, sequential

TOP_LOSSES = 9


def confusion(targets: torch.Tensor, predicted: torch.Tensor, n: int) -> list[list[int]]:
    """Rows are actual classes, columns predicted ones."""
    matrix = torch.zeros(n, n, dtype=torch.long)
    for actual, guess in zip(targets.tolist(), predicted.tolist(), strict=True):
        matrix[actual, guess] += 1
    return matrix.tolist()


def most_confused(matrix: list[list[int]], classes: list[str]) -> list[dict[str, Any]]:
    pairs = [
        {"actual": classes[a], "predicted": classes[p], "count": count}
        for a, row in enumerate(matrix)
        for p, count in enumerate(row)
        if a != p and count > 0
    ]
    return sorted(pairs, key=lambda pair: -pair["count"])


def per_class(matrix: list[list[int]], classes: list[str]) -> list[dict[str, Any]]:
    rows = []
    for i, name in enumerate(classes):
        true_pos = matrix[i][i]
        predicted = sum(row[i] for row in matrix)
        actual = sum(matrix[i])
        rows.append(
            {
                "class": name,
                "precision": true_pos / predicted if predicted else None,
                "recall": true_pos / actual if actual else None,
                "support": actual,
            }
        )
    return rows


def interpret(
    evaluation: Evaluation, samples: Sequence[Sample], classes: list[str], k: int = TOP_LOSSES
) -> dict[str, Any]:
    predicted = evaluation.probs.argmax(1)
    matrix = confusion(evaluation.targets, predicted, len(classes))
    order = torch.argsort(evaluation.losses, descending=True)[:k].tolist()
    top = [
        {
            "image_id": samples[i].image_id,
            "actual": classes[int(evaluation.targets[i])],
            "predicted": classes[int(predicted[i])],
            "loss": float(evaluation.losses[i]),
            "probability": float(evaluation.probs[i, predicted[i]]),
        }
        for i in order
    ]
    return {
        "classes": classes,
        "confusion_matrix": matrix,
        "most_confused": most_confused(matrix, classes),
        "per_class": per_class(matrix, classes),
        "top_losses": top,
    }


def last_conv_block(model: nn.Module, arch: str) -> nn.Module:
    if arch.startswith("resnet"):
        return child(model, "layer4")
    return sequential(model, "features")[-1]


def gradcam(
    model: nn.Module, arch: str, image: torch.Tensor, target: int, device: torch.device
) -> np.ndarray:
    """Grad-CAM of ``target`` for one normalised CHW image: an HxW map in [0, 1]."""
    captured: list[torch.Tensor] = []
    hook = last_conv_block(model, arch).register_forward_hook(
        lambda _m, _i, out: captured.append(out)
    )
    model.eval()
    try:
        with torch.enable_grad():
            logits = model(image.unsqueeze(0).to(device).float())
            activations = captured[0]
            (grads,) = torch.autograd.grad(logits[0, target], activations)
    finally:
        hook.remove()
    weights = grads.mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((weights * activations).sum(1, keepdim=True)).detach().float()
    cam = nn.functional.interpolate(cam, size=image.shape[1:], mode="bilinear").squeeze()
    peak = float(cam.max())
    return (cam / peak).cpu().numpy() if peak > 0 else np.zeros(image.shape[1:], np.float32)


def gradcam_png(
    model: nn.Module,
    arch: str,
    sample: Sample,
    image_size: int,
    target: int,
    device: torch.device,
    out: Path,
) -> None:
    """The image as the model saw it, with the heatmap blended over it."""
    array = center_crop(decode_rgb(sample.path, image_size), image_size)
    heat = gradcam(model, arch, torch.from_numpy(normalise(array)), target, device)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(blend(array, heat)).save(out, format="PNG")
