"""The train and lr_find jobs: database in short transactions, the training in between."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from sqlalchemy import select

from core.params import LrFindParams, TrainParams
from core.store import ImageStore
from core.tables import ModelVersion
from core.weights import project_weights
from workers.runner import JobContext
from workers.training.advice import advise
from workers.training.cpu_paths import cpu_fast_paths
from workers.training.data import DataSplit, labelled_images, load_split
from workers.training.export import export_model
from workers.training.finetune import (
    Features,
    Loaders,
    body_features,
    fine_tune,
    make_loaders,
    samples_per_class,
)
from workers.training.fit import (
    FitResult,
    Progress,
    evaluate,
    extract_features,
    pick_device,
    place,
)
from workers.training.interpret import gradcam_png, interpret
from workers.training.lr_find import LrCurve, lr_find_head
from workers.training.model import BuiltModel, build_model, head

DEFAULT_LR = 2e-3
LR_FIND_ITERATIONS = 100


def weights_path(store: ImageStore, project_id: int, name: str | None) -> Path | None:
    """The job's own project's uploaded weights file of that name (core.weights): a job
    reads only what its project owns."""
    return project_weights(store, project_id, name) if name else None


def load_data(ctx: JobContext, valid_pct: float, seed: int) -> DataSplit:
    with ctx.session() as s:
        rows = labelled_images(s, ctx.project_id)
    # Outside the transaction: from a bucket this downloads the images it lacks.
    split = load_split(rows, ctx.store, valid_pct, seed)
    if len(split.classes) < 2:
        raise ValueError(
            f"training needs at least two classes with verified, labelled images; "
            f"found {len(split.classes)}"
        )
    if not split.train or not split.valid:
        raise ValueError(
            f"too few images to split: {len(split.train)} for training, "
            f"{len(split.valid)} for validation"
        )
    return split


def build(
    ctx: JobContext, params: TrainParams | LrFindParams, split: DataSplit
) -> tuple[BuiltModel, torch.device]:
    torch.manual_seed(params.seed)
    device = pick_device()
    ctx.report(0, 1, "building the model", force=True)
    built = build_model(
        params.arch,
        len(split.classes),
        params.pretrained,
        weights_path(ctx.store, ctx.project_id, params.weights_file),
        ctx.settings.weights_dir,
    )
    place(built.model, built.arch, device)
    return built, device


def data_loaders(
    ctx: JobContext, params: TrainParams | LrFindParams, split: DataSplit, device: torch.device
) -> Loaders:
    total = len(split.train) + len(split.valid)
    loaders = make_loaders(
        split,
        params.image_size,
        params.batch_size,
        device,
        params.seed,
        augment=params.augment if isinstance(params, TrainParams) else False,
        flip=params.flip if isinstance(params, TrainParams) else False,
        on_decode=lambda done, _: ctx.report(done, total, "decoding images"),
    )
    return loaders


def find_lr(
    built: BuiltModel,
    features: tuple[torch.Tensor, torch.Tensor],
    batch_size: int,
    progress: Progress,
    seed: int,
    params: LrFindParams | None = None,
) -> LrCurve:
    """The LR finder over the head on cached body features, seeded by the job's seed."""
    params = params or LrFindParams()
    return lr_find_head(
        head(built.model, built.arch),
        features[0],
        features[1],
        batch_size,
        params.start_lr,
        params.end_lr,
        params.num_iter,
        progress,
        seed=seed,
    )


def lr_find_job(ctx: JobContext) -> dict[str, Any]:
    params = LrFindParams.model_validate(ctx.params)
    split = load_data(ctx, params.valid_pct, params.seed)
    built, device = build(ctx, params, split)
    loaders = data_loaders(ctx, params, split, device)
    progress = Progress(len(loaders.train_plain) + params.num_iter, ctx.report)
    progress.message = "computing body features"
    features = extract_features(
        built.model, built.arch, loaders.train_plain, device, progress, built.weights == "random"
    )
    progress.message = "sweeping learning rates"
    curve = find_lr(built, features, params.batch_size, progress, params.seed, params)
    return {
        **curve.as_dict(),
        "arch": params.arch,
        "weights": built.weights,
        "note": built.note,
        "device": device.type,
        "num_train": len(split.train),
    }


def _create_version(ctx: JobContext, params: TrainParams, split: DataSplit) -> int:
    """One model version per job: a redelivered job starts its own row afresh."""
    with ctx.session() as s:
        version = s.scalar(select(ModelVersion).where(ModelVersion.job_id == ctx.job_id))
        if version is None:
            version = ModelVersion(project_id=ctx.project_id, job_id=ctx.job_id)
            s.add(version)
        version.arch = params.arch
        version.params = params.model_dump()
        version.classes = split.classes
        version.split_seed = params.seed
        version.valid_pct = params.valid_pct
        version.num_train = len(split.train)
        version.num_valid = len(split.valid)
        version.metrics = []
        version.advice = []
        version.files = {}
        version.interpretation = None
        version.validation = None
        s.flush()
        return version.id


@dataclass
class Training:
    """What the train job's chapters share: the data, the model, where it runs."""

    ctx: JobContext
    params: TrainParams
    split: DataSplit
    version_id: int
    built: BuiltModel
    device: torch.device
    loaders: Loaders
    progress: Progress
    features: tuple[Features, Features] | None = None
    # The best epoch's prediction for every validation image (ModelVersion.validation).
    validation: dict[str, list[int]] | None = None


def train_job(ctx: JobContext) -> dict[str, Any]:
    """Prepare the data and the model, find a learning rate, fit, interpret, export."""
    params = TrainParams.model_validate(ctx.params)
    if params.epochs + params.freeze_epochs == 0:
        raise ValueError("nothing to train: epochs and freeze_epochs are both 0")
    split = load_data(ctx, params.valid_pct, params.seed)
    version_id = _create_version(ctx, params, split)
    built, device = build(ctx, params, split)
    # Timed from before decoding, as fastai decodes inside its fit; building the model is
    # set-up, outside the figure on both sides.
    started = time.perf_counter()
    training = _prepare(ctx, params, split, version_id, built, device)
    # Only around training: export traces the plain modules.
    with cpu_fast_paths(built.model, device):
        lr, lr_curve = _learning_rate(training)
        result = _fit(training, lr)
    train_seconds = time.perf_counter() - started
    best = result.history[result.best_epoch] if result.best_epoch is not None else None
    interpretation, files = _interpret_and_export(training, result) if best else (None, {})
    advice = advise(
        result.history,
        result.best_epoch,
        lr,
        samples_per_class(split.train, split.classes),
        len(split.valid),
        built.note if built.weights == "random" and params.pretrained else None,
    )
    _record(training, result, best, lr, advice, interpretation, files)
    images = len(split.train) * (params.freeze_epochs + params.epochs)
    return {
        "model_version_id": version_id,
        "best_epoch": result.best_epoch,
        "error_rate": best["error_rate"] if best else None,
        "lr": lr,
        "lr_suggestions": lr_curve.suggestions if lr_curve else None,
        "device": device.type,
        "weights": built.weights,
        "note": built.note,
        "seconds": round(train_seconds, 3),
        "images_per_second": round(images / train_seconds, 2) if train_seconds > 0 else None,
        "advice": [a["code"] for a in advice],
    }


def _prepare(
    ctx: JobContext,
    params: TrainParams,
    split: DataSplit,
    version_id: int,
    built: BuiltModel,
    device: torch.device,
) -> Training:
    loaders = data_loaders(ctx, params, split, device)
    need_features = params.freeze_epochs > 0 or params.lr is None
    total = (
        (loaders.feature_batches() if need_features else 0)
        + (LR_FIND_ITERATIONS if params.lr is None else 0)
        + loaders.head_steps(params.freeze_epochs)
        + loaders.unfrozen_batches(params.epochs)
    )
    training = Training(
        ctx, params, split, version_id, built, device, loaders, Progress(total, ctx.report)
    )
    if need_features:
        training.progress.message = "computing body features"
        training.features = body_features(
            built.model, built.arch, loaders, device, training.progress, built.weights == "random"
        )
    return training


def _learning_rate(t: Training) -> tuple[float, LrCurve | None]:
    """The rate asked for, or the LR finder's valley on the head."""
    if t.params.lr is not None:
        return t.params.lr, None
    assert t.features is not None
    t.progress.message = "finding a learning rate"
    curve = find_lr(t.built, t.features[0], t.params.batch_size, t.progress, t.params.seed)
    return curve.suggestions.get("valley", DEFAULT_LR), curve


def _fit(t: Training, lr: float) -> FitResult:
    params = t.params

    def on_epoch(row: dict[str, Any]) -> None:
        t.progress.message = (
            f"epoch {row['epoch'] + 1}/{params.freeze_epochs + params.epochs} ({row['stage']}): "
            f"error rate {row['error_rate']}"
        )
        with t.ctx.session() as s:
            version = s.get(ModelVersion, t.version_id)
            assert version is not None
            # A new list: SQLAlchemy does not see in-place changes to a JSON column.
            version.metrics = [*version.metrics, row]

    t.progress.message = "training"
    return fine_tune(
        t.built.model,
        t.built.arch,
        t.loaders,
        t.device,
        params.epochs,
        params.freeze_epochs,
        lr,
        params.weight_decay,
        t.progress,
        on_epoch,
        t.features,
    )


def _interpret_and_export(t: Training, result: FitResult) -> tuple[dict[str, Any], dict[str, str]]:
    """The best epoch's weights: confusion matrix, top losses with Grad-CAM, export."""
    ctx, split, model, arch = t.ctx, t.split, t.built.model, t.built.arch
    assert result.best_state is not None and result.best_epoch is not None
    ctx.report(t.progress.total, t.progress.total, "interpreting and exporting", force=True)
    model.load_state_dict(result.best_state)
    prefix = f"models/{t.version_id}"
    # Written on this machine, then put in the store for the API and other workers.
    out_dir = ctx.store.staging_root / prefix
    evaluation = evaluate(model, t.loaders.valid, t.device)
    interpretation = interpret(evaluation, split.valid, split.classes)
    # Kept whole (beside the interpretation, which keeps only the top losses) so that two
    # versions can be compared image by image on the validation images they share.
    t.validation = {
        "image_ids": [s.image_id for s in split.valid],
        "actual": [int(v) for v in evaluation.targets.tolist()],
        "predicted": [int(v) for v in evaluation.probs.argmax(1).tolist()],
    }
    for row in interpretation["top_losses"]:
        sample = next(s for s in split.valid if s.image_id == row["image_id"])
        png = out_dir / "gradcam" / f"{sample.image_id}.png"
        predicted = split.classes.index(row["predicted"])
        gradcam_png(model, arch, sample, t.params.image_size, predicted, t.device, png)
        row["gradcam"] = f"{prefix}/{png.relative_to(out_dir).as_posix()}"
    paths = export_model(
        model,
        arch,
        split.classes,
        t.params.image_size,
        out_dir,
        {
            "model_version_id": t.version_id,
            "project_id": ctx.project_id,
            "data_version": split.version,
            "best_epoch": result.best_epoch,
            "metrics": result.history[result.best_epoch],
            "weights_source": t.built.weights,
        },
    )
    files = {k: f"{prefix}/{v.relative_to(out_dir).as_posix()}" for k, v in paths.items()}
    for path in sorted(p for p in out_dir.rglob("*") if p.is_file()):
        ctx.store.put_file(f"{prefix}/{path.relative_to(out_dir).as_posix()}", path)
    return interpretation, files


def _record(
    t: Training,
    result: FitResult,
    best: dict[str, Any] | None,
    lr: float,
    advice: list[dict[str, Any]],
    interpretation: dict[str, Any] | None,
    files: dict[str, str],
) -> None:
    with t.ctx.session() as s:
        version = s.get(ModelVersion, t.version_id)
        assert version is not None
        version.best_epoch = result.best_epoch
        version.error_rate = best["error_rate"] if best else None
        version.advice = advice
        version.interpretation = interpretation
        version.validation = t.validation
        version.files = files
        version.params = {**version.params, "lr": lr, "weights_source": t.built.weights}
    summary = f"error rate {best['error_rate']:.4f} (epoch {result.best_epoch})" if best else ""
    total = t.progress.total
    t.ctx.report(total, total, f"done: {summary or 'no usable epoch'}", force=True)
