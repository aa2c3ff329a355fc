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
