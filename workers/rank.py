"""The rank job: how much a model disagrees with each image's label.

"in_sample" is the lesson's top losses over every labelled image: the loss of its label
under the trained model. Images the model trained on score low even when mislabelled,
so "out_of_fold" asks a model that never saw the image. By default ("cross_validated") that
is a fine-tune of the same recipe on the other k-1 folds (workers/cross_validation.py).
The fast option ("frozen_heads") learns logistic-regression heads on the other folds' body
features: from the ImageNet body when its weights are available (it never saw these labels);
otherwise from the trained model's body, which did. The result says which
(``features_saw_labels``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from sqlalchemy import delete, insert, select
from torch import nn
from torchvision import models

from core.db import refresh_statistics
from core.params import RankParams, TrainParams
from core.review_rank import store_review_rank
from core.tables import Image, ImageScore, ModelVersion
from workers.cross_validation import cross_validated_probs
from workers.embedding_pairs import similar_pairs
from workers.label_quality import LabelQuality, label_quality
from workers.runner import JobContext
from workers.training.cpu_paths import cpu_fast_paths, inference_copy
from workers.training.data import (
    ImageCache,
    ImageDataset,
    Sample,
    fold_of,
    labelled_images,
    load_samples,
)
from workers.training.finetune import make_loader
from workers.training.fit import Progress, extract_features, pick_device, place
from workers.training.model import build_model, head


def _version(ctx: JobContext, params: RankParams) -> ModelVersion:
    with ctx.session() as s:
        query = select(ModelVersion).where(ModelVersion.project_id == ctx.project_id)
        if params.model_version_id is not None:
            query = query.where(ModelVersion.id == params.model_version_id)
        versions = [v for v in s.scalars(query.order_by(ModelVersion.id.desc())) if v.files]
    if not versions:
        raise ValueError("no trained model to rank with: train one first")
    return versions[0]


def _samples(ctx: JobContext, classes: list[str]) -> tuple[list[Sample], list[int | None]]:
    """Ok labelled images whose class the model knows, relabelled to the model's indices."""
    with ctx.session() as s:
        rows = labelled_images(s, ctx.project_id)
    names, class_ids, samples, _ = load_samples(rows, ctx.store)
    index = {name: i for i, name in enumerate(classes)}
    ids_by_name = dict(zip(names, class_ids, strict=True))
    known = [
        Sample(x.image_id, x.sha256, index[names[x.label]], x.path, x.group)
        for x in samples
        if names[x.label] in index
    ]
    return known, [ids_by_name.get(name) for name in classes]


@torch.inference_mode()
def in_sample(layer: nn.Linear, features: torch.Tensor) -> np.ndarray:
    """The trained model's class probabilities per image, from its body features and head."""
    return layer(features).float().softmax(1).cpu().numpy()


def out_of_fold(
    features: np.ndarray, labels: np.ndarray, samples: list[Sample], folds: int, seed: int
) -> np.ndarray:
    """Each image's class probabilities from a head trained on the other folds' features."""
    fold = np.array([fold_of(seed, s.split_key, folds) for s in samples])
    probs = np.zeros((len(samples), int(labels.max()) + 1))
    for k in range(folds):
        held, rest = fold == k, fold != k
        if not held.any():
            continue
        if len(set(labels[rest].tolist())) < 2:
            raise ValueError("too few images for out-of-fold ranking: a fold lacks classes")
        scaler = StandardScaler().fit(features[rest])
        clf = LogisticRegression(max_iter=2000).fit(scaler.transform(features[rest]), labels[rest])
        held_probs = np.zeros((int(held.sum()), probs.shape[1]))
        held_probs[:, clf.classes_] = clf.predict_proba(scaler.transform(features[held]))
        probs[held] = held_probs
    return probs


def _store(
    ctx: JobContext,
    version_id: int,
    method: str,
    samples: list[Sample],
    quality: LabelQuality,
    class_ids: list[int | None],
) -> None:
    # Delete and insert in one transaction: a rerun replaces the ranking, never duplicates it.
    with ctx.session() as s:
        s.execute(
            delete(ImageScore).where(
                ImageScore.model_version_id == version_id, ImageScore.method == method
            )
        )
        # Rows, not ORM objects: thousands of tracked instances cost more than the insert.
        q = {name: values.tolist() for name, values in vars(quality).items()}
        s.execute(
            insert(ImageScore),
            [
                {
                    "model_version_id": version_id,
                    "image_id": sample.image_id,
                    "method": method,
                    "loss": q["loss"][i],
                    "label_id": class_ids[sample.label],
                    "predicted_id": class_ids[q["predicted"][i]],
                    "probability": q["probability"][i],
                    "self_confidence": q["self_confidence"][i],
                    "margin": q["margin"][i],
                    "issue": q["issue"][i],
                }
                for i, sample in enumerate(samples)
            ],
        )
        store_review_rank(s, ctx.project_id)
        refresh_statistics(s, ImageScore.__tablename__, Image.__tablename__)


def rank_job(ctx: JobContext) -> dict[str, Any]:
    params = RankParams.model_validate(ctx.params)
    version = _version(ctx, params)
    arch, classes = version.arch, list(version.classes)
    size = int(version.params.get("image_size", 224))
    samples, class_ids = _samples(ctx, classes)
    if not samples:
        raise ValueError("no verified, labelled images of the model's classes to rank")
    device = pick_device()
    model = models.get_model(arch, num_classes=len(classes))
    model.load_state_dict(load_file(str(ctx.store.get_file(version.files["weights"]))))
    place(model, arch, device)
    cache = ImageCache(size)
    cache.preload([s.path for s in samples], lambda d, t: ctx.report(d, t, "decoding images"))
    loader = make_loader(ImageDataset(samples, cache, "valid", size), 64, device, shuffle=False)
    # One pass through the body serves both rankings when the features come from it.
    heads = params.out_of_fold and params.out_of_fold_method == "frozen_heads"
    body, source = _feature_body(ctx, arch, len(classes), model, heads)
    progress = Progress((2 if body is not model else 1) * len(loader), ctx.report)
    progress.message = "scoring"
    # Scoring only reads the model: a copy with BatchNorm folded into the convolutions.
    scorer = inference_copy(model, device)
    with cpu_fast_paths(scorer, device):
        feats, _ = extract_features(scorer, arch, loader, device, progress, adapt_bn=False)
    labels = [s.label for s in samples]
    quality = label_quality(in_sample(head(model, arch), feats), np.array(labels))
    _store(ctx, version.id, "in_sample", samples, quality, class_ids)
    pairs = similar_pairs(feats.cpu().numpy(), np.array(labels), params.similarity)
    result: dict[str, Any] = {
        "model_version_id": version.id,
        "in_sample": len(samples),
        "in_sample_issues": int(quality.issue.sum()),
        # Review items: near-duplicates by the model's own features, cross-class first.
        "similar_pairs": [
            {
                "image_ids": [samples[p.first].image_id, samples[p.second].image_id],
                "similarity": round(p.similarity, 4),
                "cross_class": p.cross_class,
            }
            for p in pairs[: params.max_pairs]
        ],
    }
    if params.out_of_fold and not heads:
        recipe = TrainParams.model_validate(
            {k: v for k, v in version.params.items() if k in TrainParams.model_fields}
        )
        found = cross_validated_probs(
            ctx, recipe, classes, samples, params.folds, device, params.rounds
        )
        probs, source, saw = found.probs, "k-fold fine-tunes of the model's recipe", False
        if found.pruned is not None:
            result["pruned"] = found.pruned
    elif params.out_of_fold:
        if body is not model:
            progress.message = "ImageNet body features (out of fold)"
            with cpu_fast_paths(body, device):
                feats, _ = extract_features(body, arch, loader, device, progress, adapt_bn=False)
        probs = out_of_fold(
            feats.cpu().numpy(), np.array(labels), samples, params.folds, version.split_seed
        )
        saw = body is model
    if params.out_of_fold:
        quality = label_quality(probs, np.array(labels))
        _store(ctx, version.id, "out_of_fold", samples, quality, class_ids)
        result.update(
            out_of_fold=len(samples),
            out_of_fold_issues=int(quality.issue.sum()),
            folds=params.folds,
            features=source,
            method=params.out_of_fold_method,
            features_saw_labels=saw,
        )
    return result


def _feature_body(
    ctx: JobContext, arch: str, num_classes: int, trained: nn.Module, wanted: bool
) -> tuple[nn.Module, str]:
    """The body whose features the out-of-fold heads learn from."""
    if not wanted:
        return trained, "trained model"
    built = build_model(arch, num_classes, pretrained=True, weights_dir=ctx.settings.weights_dir)
    if built.weights == "random":
        return trained, "trained model (pretrained body unavailable; it saw these labels)"
    device = next(trained.parameters()).device
    return place(built.model, built.arch, device), built.weights
