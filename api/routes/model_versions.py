"""Model versions: side by side, in full, their files, plots, Grad-CAM images and predictions."""

from __future__ import annotations

import base64
from pathlib import Path, PurePosixPath
from typing import Annotated, Literal

from fastapi import APIRouter, File, HTTPException, Query, UploadFile, status
from fastapi.responses import FileResponse, Response
from sqlalchemy import select

from api.deps import DbSession, ProjectAccess, RowId, SettingsDep, StoreDep, load_version
from api.files import store_response
from core.compare import NotComparable
from core.compare_load import load_comparison
from core.decode import decode_limits
from core.model_version_schemas import (
    ClassProbability,
    Comparison,
    ModelDetail,
    ModelSummary,
    PredictionOut,
    PredictOut,
)
from core.plots import losses_svg, lr_find_svg
from core.predictor import UnreadableImage, load_predictor
from core.store import ImageStore, check_key
from core.tables import Job, ModelVersion

router = APIRouter(tags=["models"])

MAX_PREDICT_FILES = 64
MAX_PREDICT_BYTES = 20 * 1024**2
SVG = "image/svg+xml"
MEDIA = {
    "weights": "application/octet-stream",
    "metadata": "application/json",
    "onnx": "application/octet-stream",
}


def model_key(version: ModelVersion, kind: str) -> str:
    """The store key of one of the version's files; 404 when it has none."""
    key = version.files.get(kind)
    if not key:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"model {version.id} has no {kind} file")
    return _own_key(key, version)


def _own_key(key: str, version: ModelVersion) -> str:
    # The keys come from our own jobs, but one must never name a file outside the models.
    try:
        check_key(key)
    except ValueError:
        key = ""
    if not key.startswith("models/"):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"a file of model {version.id} is gone")
    return key


def model_file(store: ImageStore, version: ModelVersion, kind: str) -> Path:
    """The file on this machine (the bucket's are cached on first use)."""
    try:
        return store.get_file(model_key(version, kind))
    except FileNotFoundError as exc:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"the {kind} file of {version.id} is gone"
        ) from exc


@router.get("/projects/{project_id}/models", response_model=list[ModelSummary])
def list_models(access: ProjectAccess, session: DbSession) -> list[ModelSummary]:
    """Every model version of the project, newest first, with its best epoch's metrics."""
    versions = session.scalars(
        select(ModelVersion)
        .where(ModelVersion.project_id == access.project.id)
        .order_by(ModelVersion.id.desc())
    )
    return [ModelSummary.of(v) for v in versions]


@router.get("/projects/{project_id}/models/{model_id}", response_model=ModelDetail)
def get_model(model_id: RowId, access: ProjectAccess, session: DbSession) -> ModelDetail:
    """Metrics per epoch (visible while it trains), advice and interpretation."""
    return ModelDetail.full(load_version(session, access.project.id, model_id))


@router.get(
    "/projects/{project_id}/models/{model_id}/compare/{other_id}",
    response_model=Comparison,
    responses={
        404: {"description": "Either version is not one of this project's."},
        409: {
            "description": "Either version has no export or no stored validation "
            "predictions (trained before they were kept): retrain it."
        },
    },
)
def compare_models(
    model_id: RowId, other_id: RowId, access: ProjectAccess, session: DbSession
) -> Comparison:
    """Two versions on the validation images they share, the older one as "before" in
    whichever order they are named: images only one of them validated on (and why),
    relabelled images, the error of each against its own labels and both against the newer
    labels, per class, confusion matrices, the predictions fixed and broken, a verdict."""
    first = load_version(session, access.project.id, model_id)
    second = load_version(session, access.project.id, other_id)
    if first.id == second.id:
        raise HTTPException(status.HTTP_409_CONFLICT, "compare two different versions")
    try:
        return load_comparison(session, first, second)
    except NotComparable as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc


@router.get("/projects/{project_id}/models/{model_id}/files/{kind}", response_class=FileResponse)
def download_file(
    model_id: RowId,
    kind: Literal["weights", "metadata", "onnx"],
    access: ProjectAccess,
    session: DbSession,
    store: StoreDep,
) -> Response:
    """weights (safetensors state dict), metadata (JSON) or onnx."""
    version = load_version(session, access.project.id, model_id)
    key = model_key(version, kind)
    filename = f"model-{version.id}-{PurePosixPath(key).name}"
    gone = f"the {kind} file of {version.id} is gone"
    return store_response(store, key, MEDIA[kind], gone, filename=filename)


@router.get(
    "/projects/{project_id}/models/{model_id}/gradcam/{image_id}.png",
    response_class=FileResponse,
)
def gradcam(
    model_id: RowId,
    image_id: RowId,
    access: ProjectAccess,
    session: DbSession,
    store: StoreDep,
) -> Response:
    """Grad-CAM heatmap of a top-loss validation image (what the model looked at)."""
    version = load_version(session, access.project.id, model_id)
    rows = (version.interpretation or {}).get("top_losses", [])
    key = next((r.get("gradcam") for r in rows if r.get("image_id") == image_id), None)
    missing = f"no heatmap for image {image_id}"
    if not key:
        raise HTTPException(status.HTTP_404_NOT_FOUND, missing)
    return store_response(store, _own_key(key, version), "image/png", missing)


@router.get("/projects/{project_id}/models/{model_id}/losses.svg", response_class=Response)
def losses_plot(model_id: RowId, access: ProjectAccess, session: DbSession) -> Response:
    version = load_version(session, access.project.id, model_id)
    return Response(losses_svg(version.metrics), media_type=SVG)


@router.get("/projects/{project_id}/jobs/{job_id}/lr_find.svg", response_class=Response)
def lr_find_plot(job_id: RowId, access: ProjectAccess, session: DbSession) -> Response:
    """The LR finder's smoothed loss against the learning rate, with its suggestions."""
    job = session.get(Job, job_id)
    if job is None or job.project_id != access.project.id or job.kind != "lr_find":
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"lr_find job {job_id} not found")
    if not job.result:
        raise HTTPException(status.HTTP_409_CONFLICT, f"job {job_id} has no curve yet")
    result = job.result
    svg = lr_find_svg(result["lrs"], result["losses"], result.get("suggestions", {}))
    return Response(svg, media_type=SVG)


@router.post("/projects/{project_id}/models/{model_id}/predict", response_model=PredictOut)
def predict(
    model_id: RowId,
    files: Annotated[list[UploadFile], File(description="One or several images.")],
    access: ProjectAccess,
    session: DbSession,
    settings: SettingsDep,
    store: StoreDep,
    top_k: Annotated[int, Query(ge=1, le=1000, description="Classes listed in top.")] = 5,
    gradcam: Annotated[
        bool, Query(description="Add each image with its Grad-CAM heatmap (a JPEG data URL).")
    ] = False,
) -> PredictOut:
    """Classes with probabilities for each uploaded image, from the model's ONNX export.

    The heatmap needs no torch: the export's second output holds each class's Grad-CAM map
    of the last conv block (workers/training/cam.py), which numpy lays over the image.
    A plain (not async) route: FastAPI runs it in a thread, so inference does not block
    the event loop.
    """
    version = load_version(session, access.project.id, model_id)
    onnx_path = model_file(store, version, "onnx")
    metadata_path = model_file(store, version, "metadata")
    if not files or len(files) > MAX_PREDICT_FILES:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, f"send 1 to {MAX_PREDICT_FILES} files"
        )
    blobs = []
    for upload in files:
        data = upload.file.read(MAX_PREDICT_BYTES + 1)
        if len(data) > MAX_PREDICT_BYTES:
            raise HTTPException(
                status.HTTP_413_CONTENT_TOO_LARGE, f"{upload.filename} is over 20 MiB"
            )
        blobs.append(data)
    predictor = load_predictor(onnx_path, metadata_path)
    try:
        results = predictor.predict(blobs, decode_limits(settings), heatmaps=gradcam)
    except UnreadableImage as exc:
        name = files[exc.index].filename or f"image {exc.index + 1}"
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, f"{name} cannot be read: {exc.reason}"
        ) from exc
    return PredictOut(
        model_version_id=version.id,
        predictions=[
            PredictionOut(
                filename=upload.filename or "",
                label=r.label,
                probability=r.probability,
                probabilities=r.probabilities,
                top=[ClassProbability(label=c, probability=p) for c, p in r.ranked[:top_k]],
                gradcam=(
                    "data:image/jpeg;base64," + base64.b64encode(r.heatmap).decode()
                    if r.heatmap
                    else None
                ),
            )
            for upload, r in zip(files, results, strict=True)
        ],
    )
