"""fastai's ``fine_tune`` over a DataSplit: the loaders, the two stages, the best epoch.

The frozen stage trains the head on body features computed once (the LR finder uses the
same features); the unfrozen stage trains everything with discriminative learning rates.
The features are those of the training images augmented, in training batches: what
fastai's frozen epoch shows its head and its BatchNorm statistics. Features of plain
centre crops in larger batches cost the same, but left the model measurably less accurate
after the unfrozen epochs (bench/train.py at 320 images, 10 seeds: median error 0.101
against fastai's 0.055, worse in 8 seeds; with augmented features 0.047, better than
fastai in 4 seeds, worse in 5).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from core.isolation import usable_cpus
from workers.training.augment import BatchAugment, collate_sources
from workers.training.data import (
    MAX_TRAIN_ASPECT,
    DataSplit,
    ImageCache,
    ImageDataset,
    Sample,
    train_source_side,
)
from workers.training.fit import (
    FROZEN_PCT_START,
    UNFROZEN_PCT_START,
    Batches,
    FitResult,
    Progress,
    adamw,
    discriminative_lrs,
    evaluate,
    evaluation_of,
    extract_features,
    one_cycle,
    record,
    train_one_epoch,
)
from workers.training.model import head, layer_groups

Features = tuple[torch.Tensor, torch.Tensor]


@dataclass
class Loaders:
    train: Batches
    train_plain: Batches
    valid: Batches
    batch_size: int
    num_train: int

    def head_steps(self, epochs: int) -> int:
        return epochs * max(1, self.num_train // self.batch_size)

    def feature_batches(self) -> int:
        return len(self.train) + len(self.valid)

    def unfrozen_batches(self, epochs: int) -> int:
        return epochs * (len(self.train) + len(self.valid))


def loader_workers(device: torch.device) -> int:
    # On the CPU the model needs every core. A GPU needs batches assembled (and images beyond
    # the cache's budget decoded) in parallel; augmentation runs on the GPU itself.
    if device.type != "cuda":
        return 0
    return min(8, usable_cpus())


class AugmentedBatches:
    """Batches of whole training images, augmented on the device (one batch at a time)."""

    def __init__(
        self, loader: Batches, image_size: int, device: torch.device, flip: bool = True
    ) -> None:
        self.loader, self.device = loader, device
        self.augment = BatchAugment(image_size, flip)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for sources, labels in self.loader:
            yield self.augment(sources, self.device), labels

    def __len__(self) -> int:
        return len(self.loader)


def make_loader(
    dataset: ImageDataset,
    batch_size: int,
    device: torch.device,
    shuffle: bool,
    seed: int = 0,
    collate: Callable[[list[Any]], Any] | None = None,
) -> Batches:
    workers = loader_workers(device)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        collate_fn=collate,
        # A last batch of one breaks BatchNorm and adds noise; fastai drops it too.
        drop_last=shuffle and len(dataset) > batch_size,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(seed) if shuffle else None,
    )


def make_loaders(
    split: DataSplit,
    image_size: int,
    batch_size: int,
    device: torch.device,
    seed: int,
    augment: bool = True,
    on_decode: Callable[[int, int], None] | None = None,
    caches: tuple[ImageCache, ImageCache] | None = None,
    flip: bool = True,
) -> Loaders:
    """Decode every image once into memory, then build the three loaders over the cache.

    ``caches`` (training side, validation side) are reused when given: k-fold training
    decodes each image once for all its folds.
    """
    train_cache, valid_cache = caches or training_caches(image_size)
    train_cache.preload([s.path for s in split.train], on_decode)
    valid_cache.preload([s.path for s in split.valid], on_decode)
    size = image_size
    train = ImageDataset(split.train, train_cache, "augment" if augment else "plain", size)
    plain = ImageDataset(split.train, train_cache, "plain", size)
    valid = ImageDataset(split.valid, valid_cache, "valid", size)
    train_batches: Batches
    if augment:
        sources = make_loader(train, batch_size, device, True, seed, collate=collate_sources)
        train_batches = AugmentedBatches(sources, image_size, device, flip)
    else:
        train_batches = make_loader(train, batch_size, device, shuffle=True, seed=seed)
    return Loaders(
        train=train_batches,
        train_plain=make_loader(plain, batch_size * 2, device, False),
        valid=make_loader(valid, batch_size * 2, device, False),
        batch_size=batch_size,
        num_train=len(split.train),
    )


def training_caches(image_size: int) -> tuple[ImageCache, ImageCache]:
    """Empty caches for the training side (augmented from a larger source) and validation."""
    return ImageCache(train_source_side(image_size), max_aspect=MAX_TRAIN_ASPECT), ImageCache(
        image_size
    )


def fit_head(
    model: nn.Module,
    arch: str,
    features: tuple[torch.Tensor, torch.Tensor],
    valid: tuple[torch.Tensor, torch.Tensor],
    epochs: int,
    lr: float,
    weight_decay: float,
    batch_size: int,
    progress: Progress,
    result: FitResult,
    on_epoch: Callable[[dict[str, Any]], None],
) -> None:
    """The frozen stage: one-cycle on the head alone, over cached body features."""
    layer = head(model, arch)
    x, y = features
    steps_per_epoch = max(1, len(x) // batch_size)
    optimizer = adamw(layer.parameters(), lr, weight_decay)
    scheduler = one_cycle(optimizer, [lr], epochs * steps_per_epoch, FROZEN_PCT_START, 25.0)
    for _ in range(epochs):
        start = time.perf_counter()
        layer.train()
        order = torch.randperm(len(x), device=x.device)
        total, count = 0.0, 0
        for i in range(steps_per_epoch):
            idx = order[i * batch_size : (i + 1) * batch_size]
            loss = F.cross_entropy(layer(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
            progress.step()
        with torch.inference_mode():
            layer.eval()
            evaluation = evaluation_of(layer(valid[0]).float().cpu(), valid[1].cpu())
        train_loss = total / max(count, 1)
        record(
            result, model, "frozen", train_loss, evaluation, time.perf_counter() - start, on_epoch
        )
        if result.diverged:
            return


def fit_unfrozen(
    model: nn.Module,
    arch: str,
    train_loader: Batches,
    valid_loader: Batches,
    epochs: int,
    lr: float,
    weight_decay: float,
    device: torch.device,
    progress: Progress,
    result: FitResult,
    on_epoch: Callable[[dict[str, Any]], None],
) -> None:
    """The unfrozen stage: one-cycle on the whole model with discriminative learning rates."""
    groups = layer_groups(model, arch)
    lrs = discriminative_lrs(lr, len(groups))
    optimizer = adamw(
        [{"params": g, "lr": group_lr} for g, group_lr in zip(groups, lrs, strict=True)],
        lr,
        weight_decay,
    )
    scheduler = one_cycle(optimizer, lrs, epochs * len(train_loader), UNFROZEN_PCT_START, 5.0)
    for _ in range(epochs):
        start = time.perf_counter()
        train_loss = train_one_epoch(model, train_loader, optimizer, scheduler, device, progress)
        evaluation = evaluate(model, valid_loader, device, progress)
        seconds = time.perf_counter() - start
        record(result, model, "unfrozen", train_loss, evaluation, seconds, on_epoch)
        if result.diverged:
            return


def body_features(
    model: nn.Module,
    arch: str,
    loaders: Loaders,
    device: torch.device,
    progress: Progress,
    adapt_bn: bool,
) -> tuple[Features, Features]:
    """Features of one augmented pass over the training images (see the module's note),
    then of the validation images. Train features first: adapting BatchNorm there must
    precede the validation pass. With several frozen epochs the head sees this one
    augmented view of each image in every epoch."""
    train = extract_features(model, arch, loaders.train, device, progress, adapt_bn)
    valid = extract_features(model, arch, loaders.valid, device, progress, adapt_bn=False)
    return train, valid


def fine_tune(
    model: nn.Module,
    arch: str,
    loaders: Loaders,
    device: torch.device,
    epochs: int,
    freeze_epochs: int,
    lr: float,
    weight_decay: float,
    progress: Progress,
    on_epoch: Callable[[dict[str, Any]], None],
    features: tuple[Features, Features] | None,
) -> FitResult:
    """Frozen stage at ``lr`` then unfrozen stage at slice(lr / 200, lr / 2), as fastai does.

    ``features`` are the body features when the caller computed them already (LR finder);
    they are needed only when there are frozen epochs.
    """
    result = FitResult()
    if freeze_epochs > 0:
        if features is None:
            raise ValueError("the frozen stage needs the body features")
        train, valid = features
        fit_head(
            model,
            arch,
            train,
            valid,
            freeze_epochs,
            lr,
            weight_decay,
            loaders.batch_size,
            progress,
            result,
            on_epoch,
        )
    if epochs > 0 and not result.diverged:
        fit_unfrozen(
            model,
            arch,
            loaders.train,
            loaders.valid,
            epochs,
            lr / 2,
            weight_decay,
            device,
            progress,
            result,
            on_epoch,
        )
    return result


def samples_per_class(samples: list[Sample], classes: list[str]) -> dict[str, int]:
    counts = dict.fromkeys(classes, 0)
    for sample in samples:
        counts[classes[sample.label]] += 1
    return counts
