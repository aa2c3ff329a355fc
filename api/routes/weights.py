"""Body weights uploaded into a project, for its train and lr_find jobs (by file name)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, File, HTTPException, UploadFile, status
from pydantic import BaseModel

from api.deps import EditorAccess, ProjectAccess, StoreDep
from api.uploads import save_upload
from core.weights import (
    WeightsError,
    check_name,
    list_weights,
    tensor_count,
    weights_folder,
    weights_key,
)

router = APIRouter(tags=["weights"])

MAX_WEIGHTS_BYTES = 1024**3


class WeightsFile(BaseModel):
    name: str
    size: int


@router.get("/projects/{project_id}/weights", response_model=list[WeightsFile])
def list_project_weights(access: ProjectAccess, store: StoreDep) -> list[WeightsFile]:
    """Weights files of this project, for `weights_file` in train and lr_find params."""
    return [WeightsFile(name=n, size=s) for n, s in list_weights(store, access.project.id)]


@router.post(
    "/projects/{project_id}/weights",
    response_model=WeightsFile,
    status_code=status.HTTP_201_CREATED,
)
def upload_weights(
    access: EditorAccess,
    store: StoreDep,
    file: Annotated[UploadFile, File(description="A .safetensors state dict (no pickles).")],
) -> WeightsFile:
    """Add a weights file to this project; its name is the upload's file name."""
    try:
        name = check_name(file.filename or "")
    except WeightsError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    # Checked on this machine before it enters the store under its name.
    partial = store.staging(f"{weights_folder(access.project.id)}/.{uuid.uuid4().hex}.part")
    size = save_upload(file, partial, MAX_WEIGHTS_BYTES)
    try:
        tensor_count(partial)
    except WeightsError as exc:
        partial.unlink(missing_ok=True)
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    store.put_file(weights_key(access.project.id, name), partial, keep=False)
    return WeightsFile(name=name, size=size)
