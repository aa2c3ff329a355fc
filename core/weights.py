"""Body weights a project may train from: files its editors uploaded into the project.

A job names such a file by its plain name, never by a path, so that a job can only read
what its own project owns (another project's trained model is not reachable by a path
into the store). Only safetensors files are taken: they hold tensors and
nothing that runs. Pretrained ImageNet weights come from the weights directory by
architecture name (workers.training.model), not through here.
"""

from __future__ import annotations

import re
from pathlib import Path

from safetensors import safe_open

from core.params import WEIGHTS_NAME
from core.store import ImageStore

# A plain file name: no separators, no leading dot, so it cannot climb out of its folder.
NAME = re.compile(WEIGHTS_NAME)


class WeightsError(ValueError):
    """A weights name or file that cannot be used, said in words without server paths."""


def weights_key(project_id: int, name: str) -> str:
    """The store key of the project's weights file of that name."""
    return f"{weights_folder(project_id)}/{check_name(name)}"


def weights_folder(project_id: int) -> str:
    return f"projects/{project_id}/weights"


def check_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise WeightsError(
            f"{name!r} is not a weights file name: letters, digits, '.', '_' and '-', "
            "ending in .safetensors"
        )
    return name


def _absent(name: str) -> WeightsError:
    return WeightsError(f"this project has no weights file {name!r}; upload it first")


def check_weights(store: ImageStore, project_id: int, name: str) -> None:
    """WeightsError unless the project has a weights file of that name (nothing is read)."""
    if not store.has(weights_key(project_id, name)):
        raise _absent(name)


def project_weights(store: ImageStore, project_id: int, name: str) -> Path:
    """A local file of the project's own weights file of that name; WeightsError if none."""
    try:
        return store.get_file(weights_key(project_id, name))
    except FileNotFoundError as exc:
        raise _absent(name) from exc


def list_weights(store: ImageStore, project_id: int) -> list[tuple[str, int]]:
    return [
        (name, size)
        for name, size in store.listing(weights_folder(project_id))
        if name.endswith(".safetensors")
    ]


def tensor_count(path: Path) -> int:
    """Open the file as safetensors (header only, no torch); WeightsError if it is not."""
    try:
        with safe_open(str(path), framework="numpy") as opened:
            return len(list(opened.keys()))
    except Exception as exc:  # safetensors raises its own error types and OSError
        raise WeightsError(f"not a safetensors file ({type(exc).__name__})") from exc
