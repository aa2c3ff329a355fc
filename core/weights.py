"""Body weights a project may train from: files its editors uploaded into the project.

A job names such a file by its plain name, never by a path, so that a job can only read
what its own project owns (another project's trained model is not reachable by a path
under the data directory). Only safetensors files are taken: they hold tensors and
nothing that runs. Pretrained ImageNet weights come from the weights directory by
architecture name (workers.training.model), not through here.
"""

from __future__ import annotations

import re
from pathlib import Path

from safetensors import safe_open

from core.config import Settings
from core.params import WEIGHTS_NAME

# A plain file name: no separators, no leading dot, so it cannot climb out of its folder.
NAME = re.compile(WEIGHTS_NAME)


class WeightsError(ValueError):
    """A weights name or file that cannot be used, said in words without server paths."""


def weights_dir(settings: Settings, project_id: int) -> Path:
    return settings.data_dir / "projects" / str(project_id) / "weights"


def check_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise WeightsError(
            f"{name!r} is not a weights file name: letters, digits, '.', '_' and '-', "
            "ending in .safetensors"
        )
    return name


def project_weights(settings: Settings, project_id: int, name: str) -> Path:
    """The project's own weights file of that name; WeightsError if it has none."""
    path = weights_dir(settings, project_id) / check_name(name)
    if not path.is_file():
        raise WeightsError(f"this project has no weights file {name!r}; upload it first")
    return path


def list_weights(settings: Settings, project_id: int) -> list[tuple[str, int]]:
    folder = weights_dir(settings, project_id)
    if not folder.is_dir():
        return []
    return sorted((p.name, p.stat().st_size) for p in folder.glob("*.safetensors"))


def tensor_count(path: Path) -> int:
    """Open the file as safetensors (header only, no torch); WeightsError if it is not."""
    try:
        with safe_open(str(path), framework="numpy") as opened:
            return len(list(opened.keys()))
    except Exception as exc:  # safetensors raises its own error types and OSError
        raise WeightsError(f"not a safetensors file ({type(exc).__name__})") from exc
