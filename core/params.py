"""Parameters of each job kind, validated by the API before a job is queued.

The worker reads the same models back from ``job.params`` so that both sides agree.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class JobParams(BaseModel):
    """Base of every job kind's parameters: unknown fields are an error, not ignored."""

    model_config = ConfigDict(extra="forbid")


class ImportZipParams(JobParams):
    upload: str = Field(description="Store key of the uploaded zip (uploads/<name>.zip).")
    label: str | None = Field(
        default=None, description="Class for files at the top level of the zip (no folder)."
    )
    verify: bool = Field(
        default=True,
        description=(
            "Verify images while they arrive (decode, normalised copy, thumbnail, duplicates);"
            " when false they stay pending until a verify job."
        ),
    )


class UrlItem(JobParams):
    url: str
    label: str


class ImportUrlsParams(JobParams):
    items: list[UrlItem] = Field(min_length=1, max_length=100_000)
    verify: bool = Field(
        default=True,
        description=(
            "Verify images while they arrive (decode, normalised copy, thumbnail, duplicates);"
            " when false they stay pending until a verify job."
        ),
    )


Engine = Literal["bing", "duckduckgo"]

# The name of a weights file uploaded to the job's own project: never a path.
WEIGHTS_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}\.safetensors$"


def _default_engines() -> list[Engine]:
    return ["bing"]


class HarvestParams(JobParams):
    engines: list[Engine] = Field(default_factory=_default_engines)
    class_ids: list[int] | None = Field(
        default=None, description="Classes to harvest; all classes with queries when omitted."
    )
    max_per_class: int = Field(default=200, ge=1, le=5000)
    min_width: int = Field(default=0, ge=0)
    min_height: int = Field(default=0, ge=0)
    safe_search: bool = True
    verify: bool = Field(
        default=True,
        description=(
            "Verify images while they arrive (decode, normalised copy, thumbnail, duplicates);"
            " when false they stay pending until a verify job."
        ),
    )


class VerifyParams(JobParams):
    recheck: bool = Field(
        default=False, description="Verify every image again, not only pending ones."
    )
    min_width: int = Field(default=0, ge=0, description="Reject narrower images as too small.")
    min_height: int = Field(default=0, ge=0, description="Reject lower images as too small.")


Arch = Literal["resnet18", "resnet34", "resnet50", "convnext_tiny", "efficientnet_b0"]


class TrainParams(JobParams):
    arch: Arch = "resnet18"
    pretrained: bool = True
    image_size: int = Field(default=224, ge=16, le=1024)
    batch_size: int = Field(default=32, ge=1, le=1024)
    epochs: int = Field(default=4, ge=0, le=500)
    freeze_epochs: int = Field(default=1, ge=0, le=100)
    lr: float | None = Field(
        default=None, gt=0, description="Base learning rate; lr_find if unset."
    )
    weight_decay: float = Field(default=0.01, ge=0)
    valid_pct: float = Field(default=0.2, gt=0, lt=1)
    seed: int = 42
    augment: bool = True
    flip: bool = Field(
        default=True,
        description="Mirror training images left-right at random (part of augment). Turn it "
        "off for classes whose orientation matters: digits, letters, signs.",
    )
    weights_file: str | None = Field(
        default=None,
        pattern=WEIGHTS_NAME,
        description="Body weights uploaded to this project (POST .../weights), by file name; "
        "used instead of ImageNet weights.",
    )


class LrFindParams(JobParams):
    arch: Arch = "resnet18"
    pretrained: bool = True
    image_size: int = Field(default=224, ge=16, le=1024)
    batch_size: int = Field(default=32, ge=1, le=1024)
    start_lr: float = 1e-7
    end_lr: float = 10.0
    num_iter: int = Field(default=100, ge=5, le=1000)
    valid_pct: float = Field(default=0.2, gt=0, lt=1)
    seed: int = 42
    weights_file: str | None = Field(
        default=None, pattern=WEIGHTS_NAME, description="Body weights, as for training."
    )


class RankParams(JobParams):
    model_version_id: int | None = Field(
        default=None, description="Model to score with; the project's latest when omitted."
    )
    out_of_fold: bool = Field(default=False, description="Also rank by k-fold cross-validation.")
    out_of_fold_method: Literal["cross_validated", "frozen_heads"] = Field(
        default="cross_validated",
        description="cross_validated: k fine-tunes of the model's own recipe, each on k-1 "
        "folds, scoring the held-out fold (honest with or without pretrained weights; costs "
        "k trainings). frozen_heads: logistic-regression heads on body features (seconds; "
        "honest only when ImageNet weights are available, otherwise the features saw the labels).",
    )
    folds: int = Field(default=5, ge=2, le=10)
    rounds: int = Field(
        default=3,
        ge=1,
        le=5,
        description="cross_validated only: rounds of k fold trainings. Round 1 trains on "
        "every label; each later round without the images the round before flagged "
        "(confident learning), and the ranking is the mean of the later rounds. 1: no pruning "
        "(a model trained on noisy labels finds systematic swaps plausible). Costs rounds x k "
        "trainings; bench/label_errors.py measures it.",
    )
    similarity: float = Field(
        default=0.97,
        gt=0,
        le=1,
        description="Cosine similarity of penultimate features at which two images are listed "
        "as near-duplicates in the result (cross-class pairs first).",
    )
    max_pairs: int = Field(default=500, ge=0, le=10_000)
