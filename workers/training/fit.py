"""The training loop's parts, in the shape of torchvision's reference scripts.

train_one_epoch, evaluate, body-feature extraction, fastai's one-cycle schedule and
discriminative learning rates, and the per-epoch record that keeps the best weights.
The two stages that use them are in finetune.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim import AdamW
from torch.optim.lr_scheduler import OneCycleLR

from workers.training.augment import normalise_batch
from workers.training.model import headless

Batch = tuple[torch.Tensor, torch.Tensor]


class Batches(Protocol):
    """What the loops need of a loader: iteration over (inputs, targets) and a length."""

    def __iter__(self) -> Iterator[Any]: ...

    def __len__(self) -> int: ...


# fastai's fine_tune defaults.
LR_MULT = 100.0
UNFROZEN_DIV = 5.0
FROZEN_PCT_START = 0.99
UNFROZEN_PCT_START = 0.3
FINAL_DIV = 1e5
BETAS = (0.9, 0.99)


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast(device: torch.device) -> AbstractContextManager[Any]:
    # bf16 autocast on CUDA only: on the CPU it is slow and changes the numbers.
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def place(model: nn.Module, arch: str, device: torch.device) -> nn.Module:
    """Move the model; on CUDA in channels_last, where cuDNN has its NHWC tensor-core kernels.

    Not on the CPU (no faster there) and not for EfficientNet: its depthwise convolutions
    cost about 12 s of kernel preparation per input shape on an H200 in channels_last and
    run no faster after it (measured with bench/gpu_check.py).
    """
    model = model.to(device)
    if device.type == "cuda" and not arch.startswith("efficientnet"):
        model = model.to(memory_format=torch.channels_last)
    return model


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A batch of uint8 images to the device, then to normalised float there.

    Inputs stay contiguous: a channels_last model converts at its first convolution.
    """
    x = x.to(device, non_blocking=True)
    return x if x.is_floating_point() else normalise_batch(x)


def adamw(params: Any, lr: float, weight_decay: float) -> AdamW:
    """fastai's Adam settings; the fused kernel: on small images the optimiser step of a
    resnet costs as much as its forward pass, and fused is the fastest there (CPU and CUDA)."""
    return AdamW(params, lr=lr, betas=BETAS, eps=1e-5, weight_decay=weight_decay, fused=True)


class Progress:
    """Counts batches across all stages and hands them to ``report(done, total, message)``."""

    def __init__(self, total: int, report: Callable[[int, int, str], None]) -> None:
        self.total, self.done, self.report = total, 0, report
        self.message = ""

    def step(self, message: str | None = None) -> None:
        self.done += 1
        if message is not None:
            self.message = message
        self.report(min(self.done, self.total), self.total, self.message)


@dataclass
class Evaluation:
    loss: float
    losses: torch.Tensor
    probs: torch.Tensor
    targets: torch.Tensor

    @property
    def error_rate(self) -> float:
        if len(self.targets) == 0:
            return float("nan")
        return float((self.probs.argmax(1) != self.targets).float().mean())


@dataclass
class FitResult:
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int | None = None
    best_state: dict[str, torch.Tensor] | None = None
    diverged: bool = False


def finite_or_none(value: float) -> float | None:
    # JSON columns on Postgres reject NaN and Infinity.
    return value if math.isfinite(value) else None


def one_cycle(
    optimizer: torch.optim.Optimizer,
    max_lr: list[float],
    steps: int,
    pct_start: float,
    div: float,
) -> OneCycleLR:
    return OneCycleLR(
        optimizer,
        max_lr=max_lr,
        total_steps=max(steps, 1),
        pct_start=pct_start,
        div_factor=div,
        final_div_factor=FINAL_DIV / div,
        base_momentum=0.85,
        max_momentum=0.95,
    )


def discriminative_lrs(lr: float, groups: int) -> list[float]:
    """The lesson's slice(lr / 100, lr): geometric steps from the first group to the head."""
    lo = lr / LR_MULT
    if groups == 1:
        return [lr]
    return [lo * (lr / lo) ** (i / (groups - 1)) for i in range(groups)]


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    loader: Batches,
    device: torch.device,
    progress: Progress | None = None,
) -> Evaluation:
    model.eval()
    logits, targets = [], []
    for x, y in loader:
        with autocast(device):
            out = model(to_device(x, device))
        logits.append(out.float().cpu())
        targets.append(y)
        if progress is not None:
            progress.step()
    return evaluation_of(torch.cat(logits), torch.cat(targets))


def evaluation_of(logits: torch.Tensor, targets: torch.Tensor) -> Evaluation:
    losses = F.cross_entropy(logits, targets, reduction="none")
    loss = float(losses.mean()) if len(losses) else float("nan")
    return Evaluation(loss, losses, logits.softmax(1), targets)


def train_one_epoch(
    model: nn.Module,
    loader: Batches,
    optimizer: torch.optim.Optimizer,
    scheduler: OneCycleLR,
    device: torch.device,
    progress: Progress,
) -> float:
    model.train()
    total = torch.zeros((), device=device)
    count = 0
    for x, y in loader:
        inputs, targets = to_device(x, device), y.to(device, non_blocking=True)
        with autocast(device):
            loss = F.cross_entropy(model(inputs), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        # Summed on the device: no host sync per batch on CUDA.
        total += loss.detach().float() * len(targets)
        count += len(targets)
        progress.step()
    return float(total) / max(count, 1)


def bn_only_train(model: nn.Module) -> None:
    """Eval mode except BatchNorm, which uses and tracks the batch statistics."""
    model.eval()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.train()


@torch.inference_mode()
def extract_features(
    model: nn.Module,
    arch: str,
    loader: Batches,
    device: torch.device,
    progress: Progress,
    adapt_bn: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled body features of every image in ``loader``.

    ``adapt_bn``: a randomly initialised body has meaningless BatchNorm statistics; letting
    them track this data while the features are computed is what fastai's frozen epoch does
    (its BatchNorm layers stay trainable). Pretrained statistics are kept as they are.
    """
    feats, targets = [], []
    with headless(model, arch) as body:
        for x, y in loader:
            # Batch statistics of a single image are undefined (and raise); such a last
            # batch uses the statistics gathered so far.
            if adapt_bn and len(x) > 1:
                bn_only_train(body)
            else:
                body.eval()
            with autocast(device):
                out = body(to_device(x, device))
            feats.append(out.float())
            targets.append(y.to(device))
            progress.step()
    return torch.cat(feats), torch.cat(targets)


def record(
    result: FitResult,
    model: nn.Module,
    stage: str,
    train_loss: float,
    evaluation: Evaluation,
    seconds: float,
    on_epoch: Callable[[dict[str, Any]], None],
) -> None:
    epoch = len(result.history)
    error = evaluation.error_rate
    row = {
        "epoch": epoch,
        "stage": stage,
        "train_loss": finite_or_none(train_loss),
        "valid_loss": finite_or_none(evaluation.loss),
        "error_rate": finite_or_none(error),
        "accuracy": finite_or_none(1.0 - error),
        "seconds": round(seconds, 3),
    }
    result.history.append(row)
    if not (math.isfinite(train_loss) and math.isfinite(evaluation.loss)):
        # Nothing after a non-finite loss can recover: stop, keep the best epoch so far.
        result.diverged = True
    elif result.best_epoch is None or _better(row, result.history[result.best_epoch]):
        result.best_epoch = epoch
        state = model.state_dict()
        if result.best_state is None:
            result.best_state = {k: v.detach().clone() for k, v in state.items()}
        else:  # into the copy already made: no new allocation per epoch
            for k, v in state.items():
                result.best_state[k].copy_(v)
    on_epoch(row)


def _better(row: dict[str, Any], best: dict[str, Any]) -> bool:
    return (row["error_rate"], row["valid_loss"]) < (best["error_rate"], best["valid_loss"])
