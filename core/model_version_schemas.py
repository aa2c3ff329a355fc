"""Response models of the model-version routes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from core.tables import ModelVersion


class EpochMetrics(BaseModel):
    epoch: int
    stage: str = Field(description="frozen (head only) or unfrozen (whole model)")
    train_loss: float | None
    valid_loss: float | None
    error_rate: float | None
    accuracy: float | None
    seconds: float


class Advice(BaseModel):
    code: str = Field(
        description="lr_too_high, lr_too_low, too_few_epochs, too_many_epochs, "
        "not_enough_data or random_init"
    )
    message: str
    next_step: str


class ModelSummary(BaseModel):
    """One row of the side-by-side comparison of a project's models."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    project_id: int
    job_id: int | None
    arch: str
    classes: list[str]
    image_size: int | None
    lr: float | None
    epochs_run: int
    best_epoch: int | None
    error_rate: float | None
    accuracy: float | None
    valid_loss: float | None
    num_train: int
    num_valid: int
    split_seed: int
    valid_pct: float
    weights_source: str | None
    status: str = Field(
        description="ready (exported), training, failed or cancelled (stopped before the "
        "export; the metrics so far are kept), or incomplete"
    )
    files: list[str] = Field(description="Downloadable files: weights, metadata, onnx.")
    advice_codes: list[str]
    created_at: datetime

    @classmethod
    def of(cls, version: ModelVersion) -> ModelSummary:
        best = (
            version.metrics[version.best_epoch]
            if version.best_epoch is not None and version.best_epoch < len(version.metrics)
            else {}
        )
        params = version.params or {}
        return cls(
            id=version.id,
            project_id=version.project_id,
            job_id=version.job_id,
            arch=version.arch,
            classes=list(version.classes),
            image_size=params.get("image_size"),
            lr=params.get("lr"),
            epochs_run=len(version.metrics),
            best_epoch=version.best_epoch,
            error_rate=version.error_rate,
            accuracy=best.get("accuracy"),
            valid_loss=best.get("valid_loss"),
            num_train=version.num_train,
            num_valid=version.num_valid,
            split_seed=version.split_seed,
            valid_pct=version.valid_pct,
            weights_source=params.get("weights_source"),
            status=version.status,
            files=sorted(version.files),
            advice_codes=[a["code"] for a in version.advice],
            created_at=version.created_at,
        )


class ModelDetail(ModelSummary):
    params: dict[str, Any]
    metrics: list[EpochMetrics]
    advice: list[Advice]
    interpretation: dict[str, Any] | None = Field(
        description="confusion_matrix (rows actual, columns predicted), most_confused, "
        "per_class precision/recall, top_losses (each with a gradcam image path)"
    )

    @classmethod
    def full(cls, version: ModelVersion) -> ModelDetail:
        return cls(
            **ModelSummary.of(version).model_dump(),
            params=version.params or {},
            metrics=[EpochMetrics(**m) for m in version.metrics],
            advice=[Advice(**a) for a in version.advice],
            interpretation=version.interpretation,
        )


class ClassProbability(BaseModel):
    label: str
    probability: float


class PredictionOut(BaseModel):
    filename: str
    label: str
    probability: float
    probabilities: dict[str, float] = Field(description="Every class's probability.")
    top: list[ClassProbability] = Field(description="The top_k classes, most likely first.")
    gradcam: str | None = Field(
        default=None,
        description="With gradcam=true: a data: URL of a JPEG, the image (centre crop, as "
        "the model sees it) with the Grad-CAM heatmap of the predicted class over it. Null "
        "for a model exported before heatmaps were part of the export.",
    )


class PredictOut(BaseModel):
    model_version_id: int
    predictions: list[PredictionOut]


class CompareSide(BaseModel):
    """One of the two versions, on its whole validation set."""

    id: int
    created_at: datetime
    classes: list[str]
    split_seed: int
    valid_pct: float
    num_valid: int = Field(description="Images in its whole validation set.")
    stored_error_rate: float | None = Field(description="The best epoch's error, as trained.")
    recomputed_error_rate: float | None = Field(
        description="mean(actual != predicted) over its stored validation predictions."
    )
    error_rate_matches: bool = Field(
        description="Whether the two agree (to float32 precision: training computes in float32)."
    )


class LeftOut(BaseModel):
    """A validation image of one version only, and why."""

    image_id: int
    reason: str = Field(
        description="deleted, rejected, pending, unlabelled, relabelled, added, restored, "
        "labelled, split or other"
    )
    detail: str


class Relabelled(BaseModel):
    image_id: int
    before: str = Field(description="Its label when the older version trained.")
    after: str = Field(description="Its label when the newer version trained.")


class ErrorPair(BaseModel):
    """Errors of the older and the newer version on the shared images."""

    errors_before: int
    errors_after: int
    before: float | None
    after: float | None


class ClassErrors(BaseModel):
    label: str = Field(description="The class, by the newer version's labels.")
    count: int
    errors_before: int
    errors_after: int
    error_rate_before: float | None
    error_rate_after: float | None


class ChangedImage(BaseModel):
    image_id: int
    label: str = Field(description="By the newer version's labels.")
    before: str = Field(description="The older version's prediction.")
    after: str = Field(description="The newer version's prediction.")


class Changed(BaseModel):
    """Shared images whose prediction changed, judged against the newer labels."""

    fixed: list[ChangedImage] = Field(description="Wrong before, right after.")
    broken: list[ChangedImage] = Field(description="Right before, wrong after.")
    still_wrong: int = Field(description="Another prediction, wrong both times.")


class Comparison(BaseModel):
    """Two versions of a project on the validation images they share: before is the older."""

    project_id: int
    before: CompareSide
    after: CompareSide
    cleaned: int = Field(
        description="Images people changed (label events from api, ui or bulk) between the "
        "two versions' training."
    )
    shared: list[int] = Field(description="Validation images of both versions.")
    only_before: list[LeftOut]
    only_after: list[LeftOut]
    relabelled: list[Relabelled] = Field(description="Shared images whose label changed.")
    own_labels: ErrorPair = Field(
        description="Each version against the labels it was trained and validated with."
    )
    after_labels: ErrorPair = Field(
        description="Both versions against the newer labels: the like-for-like figure."
    )
    per_class: list[ClassErrors]
    classes: list[str] = Field(description="Both versions' classes, rows and columns below.")
    confusion_before: list[list[int]] = Field(
        description="The older version on the shared images (rows: newer label, columns: "
        "predicted)."
    )
    confusion_after: list[list[int]]
    changed: Changed
    verdict: str
