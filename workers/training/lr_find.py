"""The learning-rate finder: an exponential sweep, a smoothed curve, two suggestions.

As in fastai, it runs on the model as it will start fine-tuning (body frozen), so it
trains the head on the cached body features and restores the head afterwards.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from workers.training.fit import Progress, adamw

SMOOTHING = 0.98
# The sweep stops once the smoothed loss is this many times its minimum.
DIVERGENCE = 4.0


@dataclass
class LrCurve:
    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    raw_losses: list[float] = field(default_factory=list)
    suggestions: dict[str, float] = field(default_factory=dict)
    stopped_early: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def sweep(
    step: Callable[[float], float],
    start_lr: float,
    end_lr: float,
    num_iter: int,
    progress: Progress,
) -> LrCurve:
    """Call ``step(lr)`` (one optimiser step, returns the loss) at exponentially rising lrs."""
    curve = LrCurve()
    average, best = 0.0, math.inf
    for i in range(num_iter):
        lr = start_lr * (end_lr / start_lr) ** (i / max(num_iter - 1, 1))
        loss = step(lr)
        progress.step(f"lr {lr:.2e} loss {loss:.4f}")
        if not math.isfinite(loss):
            curve.stopped_early = True
            break
        average = SMOOTHING * average + (1 - SMOOTHING) * loss
        smoothed = average / (1 - SMOOTHING ** (i + 1))
        curve.lrs.append(lr)
        curve.raw_losses.append(loss)
        curve.losses.append(smoothed)
        best = min(best, smoothed)
        if smoothed > DIVERGENCE * best:
            curve.stopped_early = True
            break
    curve.suggestions = suggest(curve.lrs, curve.losses)
    return curve


def valley(lrs: list[float], losses: list[float]) -> float:
    """fastai's valley: two thirds down the longest stretch where the loss keeps falling."""
    n = len(losses)
    lds = [1] * n
    max_start, max_end = 0, 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and lds[i] < lds[j] + 1:
                lds[i] = lds[j] + 1
        if lds[max_end] < lds[i]:
            max_end = i
            max_start = max_end - lds[max_end]
    sections = (max_end - max_start) / 3
    index = max_start + int(sections) + int(sections / 2)
    return lrs[min(max(index, 0), n - 1)]


def suggest(lrs: list[float], losses: list[float]) -> dict[str, float]:
    """Valley and steepest slope, on the curve without its noisy first tenth and last points."""
    if len(lrs) < 3:
        return {}
    lo, hi = len(lrs) // 10, max(len(lrs) - 5, len(lrs) // 10 + 3)
    xs, ys = lrs[lo:hi], losses[lo:hi]
    slopes = [
        (ys[i + 1] - ys[i]) / (math.log(xs[i + 1]) - math.log(xs[i])) for i in range(len(xs) - 1)
    ]
    steep = xs[min(range(len(slopes)), key=slopes.__getitem__)]
    minimum = xs[min(range(len(ys)), key=ys.__getitem__)] / 10
    return {"valley": valley(xs, ys), "steep": steep, "minimum": minimum}


def lr_find_head(
    layer: nn.Linear,
    features: torch.Tensor,
    targets: torch.Tensor,
    batch_size: int,
    start_lr: float,
    end_lr: float,
    num_iter: int,
    progress: Progress,
    weight_decay: float = 0.01,
    seed: int = 42,
) -> LrCurve:
    """Sweep on a copy of the head over cached body features; ``layer`` is left untouched."""
    probe = copy.deepcopy(layer).train()
    optimizer = adamw(probe.parameters(), start_lr, weight_decay)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    batch = min(batch_size, len(features))
    order: list[int] = []

    def step(lr: float) -> float:
        nonlocal order
        if len(order) < batch:
            order = torch.randperm(len(features), generator=generator).tolist()
        idx = torch.tensor(order[:batch], device=features.device)
        order = order[batch:]
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss = F.cross_entropy(probe(features[idx]), targets[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return sweep(step, start_lr, end_lr, num_iter, progress)
