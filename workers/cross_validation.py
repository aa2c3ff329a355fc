"""Out-of-fold probabilities by k-fold training: each fold a real fine-tune.

A model scores low loss on the images it trained on, wrong labels included, and heads
learnt on a body that was itself trained on the noisy labels inherit that. So each image
here is scored by a model trained with the same recipe (architecture, image size, epochs,
learning rate, augmentation) on the other k-1 folds only, from random or ImageNet weights
as the ranked model was: no model that scores an image ever saw its label. Folds go by
near-duplicate group, as the validation split does. Images are decoded once for all folds.

With ``rounds`` above 1 (3 by default) the folds are trained again, as confident learning's
authors do: a model trained on noisy labels learns part of the noise, above all when
look-alike classes are swapped systematically, and then finds those swapped images
plausible. Each later round's fold models train without the images the round before flagged
(per-class thresholds, cleanlab's find_label_issues), and the ranking is the mean of the
later rounds' probabilities (two models a held-out image, each trained on cleaner labels).
Each round draws its own folds, initial weights and batch order (seed + round - 1): rounds
that shared them trained near-copies of one model, whose mean gained little over either.
An image's own label still never reaches a model that scores it, except through which
other images an earlier round flagged, a second-order effect. bench/label_errors.py
measured it (README).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from core.params import TrainParams
from workers.label_quality import issues
from workers.runner import JobContext
from workers.train import DEFAULT_LR, weights_path
from workers.training.cpu_paths import cpu_fast_paths
from workers.training.data import DataSplit, ImageCache, Sample, fold_of
from workers.training.finetune import body_features, fine_tune, make_loaders, training_caches
from workers.training.fit import Progress, extract_features, place
from workers.training.model import build_model, head


@dataclass(frozen=True)
class OutOfFold:
    probs: np.ndarray
    # Images the last round trained without (None: one round only).
    pruned: int | None


def cross_validated_probs(
    ctx: JobContext,
    recipe: TrainParams,
    classes: list[str],
    samples: list[Sample],
    folds: int,
    device: torch.device,
    rounds: int = 3,
) -> OutOfFold:
    """Class probabilities of every sample from fold models that did not train on it: the
    first round's with ``rounds=1``, otherwise the mean of the pruned rounds' (2..rounds),
    each trained without the images the round before it flagged."""
    labels = np.array([s.label for s in samples])
    keep = np.ones(len(samples), dtype=bool)
    run = _Round(ctx, recipe, classes, samples, folds, device, training_caches(recipe.image_size))
    if not _every_fold_learns(run.folds_of(1), labels, keep, folds):
        raise ValueError("too few images for out-of-fold ranking: a fold lacks classes")
    paths = [s.path for s in samples]
    for cache in run.caches:
        cache.preload(paths, lambda d, t: ctx.report(d, t, "decoding images"))
    probs = run(1, keep, "round 1, " if rounds > 1 else "")
    if rounds == 1:
        return OutOfFold(probs, None)
    pruned: list[np.ndarray] = []
    left_out = 0
    for number in range(2, rounds + 1):
        flagged = issues(probs, labels)
        if not _every_fold_learns(run.folds_of(number), labels, ~flagged, folds):
            # This round's folds, less the flagged images, would leave a fold without two
            # classes to learn: stop here.
            break
        probs = run(number, ~flagged, f"round {number}, ")
        pruned.append(probs)
        left_out = int(flagged.sum())
    if not pruned:
        return OutOfFold(probs, 0)
    return OutOfFold(np.mean(pruned, axis=0), left_out)


def _every_fold_learns(fold: np.ndarray, labels: np.ndarray, keep: np.ndarray, folds: int) -> bool:
    return all(len(set(labels[(fold != k) & keep].tolist())) >= 2 for k in range(folds))


@dataclass
class _Round:
    """One round of k fold models. Round r draws its own folds, initial weights and batch
    order from the recipe's seed + r - 1: round 1 is what one round always was, and later
    rounds' models are not copies of each other's mistakes, so their mean gains."""

    ctx: JobContext
    recipe: TrainParams
    classes: list[str]
    samples: list[Sample]
    folds: int
    device: torch.device
    caches: tuple[ImageCache, ImageCache]

    def seed(self, number: int) -> int:
        return self.recipe.seed + number - 1

    def folds_of(self, number: int) -> np.ndarray:
        return np.array([fold_of(self.seed(number), s.split_key, self.folds) for s in self.samples])

    def __call__(self, number: int, keep: np.ndarray, prefix: str) -> np.ndarray:
        """Round ``number``'s out-of-fold probabilities; ``keep``: the images it may train on."""
        recipe = self.recipe.model_copy(update={"seed": self.seed(number)})
        lr = recipe.lr or DEFAULT_LR
        fold = self.folds_of(number)
        probs = np.zeros((len(self.samples), len(self.classes)))
        for k in range(self.folds):
            held = np.flatnonzero(fold == k)
            if len(held) == 0:
                continue
            split = DataSplit(
                self.classes,
                [],
                [s for i, s in enumerate(self.samples) if fold[i] != k and keep[i]],
                [self.samples[i] for i in held],
            )
            name = f"{prefix}fold {k + 1}/{self.folds}"
            probs[held] = _fold(self.ctx, recipe, split, lr, self.device, self.caches, name)
        return probs


def _fold(
    ctx: JobContext,
    recipe: TrainParams,
    split: DataSplit,
    lr: float,
    device: torch.device,
    caches: tuple[ImageCache, ImageCache],
    name: str,
) -> np.ndarray:
    torch.manual_seed(recipe.seed)
    built = build_model(
        recipe.arch,
        len(split.classes),
        recipe.pretrained,
        weights_path(ctx.store, ctx.project_id, recipe.weights_file),
        ctx.settings.weights_dir,
    )
    model = place(built.model, built.arch, device)
    loaders = make_loaders(
        split,
        recipe.image_size,
        recipe.batch_size,
        device,
        recipe.seed,
        augment=recipe.augment,
        caches=caches,
        flip=recipe.flip,
    )
    features_needed = recipe.freeze_epochs > 0
    total = (
        (loaders.feature_batches() if features_needed else 0)
        + loaders.head_steps(recipe.freeze_epochs)
        + loaders.unfrozen_batches(recipe.epochs)
        + len(loaders.valid)
    )
    # Progress per fold: "fold 2/5: training", counted over that fold's batches.
    progress = Progress(total, ctx.report)
    progress.message = f"{name}: training"
    with cpu_fast_paths(model, device):
        features = (
            body_features(model, built.arch, loaders, device, progress, built.weights == "random")
            if features_needed
            else None
        )
        fine_tune(
            model,
            built.arch,
            loaders,
            device,
            recipe.epochs,
            recipe.freeze_epochs,
            lr,
            recipe.weight_decay,
            progress,
            lambda _row: None,
            features,
        )
        progress.message = f"{name}: scoring the held-out fold"
        feats, _ = extract_features(model, built.arch, loaders.valid, device, progress, False)
    with torch.inference_mode():
        probs: np.ndarray = head(model, built.arch)(feats).float().softmax(1).cpu().numpy()
    return probs
