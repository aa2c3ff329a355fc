"""Adding raw image bytes to a project: store once by content, one row per (project, sha256)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.models import Image, ImageClass
from api.store import ImageStore


@dataclass
class Provenance:
    source: str = "upload"
    filename: str = ""
    engine: str | None = None
    query: str | None = None
    rank: int | None = None
    image_url: str | None = None
    page_url: str | None = None
    thumbnail_url: str | None = None
    title: str | None = None
    http_status: int | None = None
    content_type: str | None = None
    fetched_at: datetime | None = None
    harvest_job_id: int | None = None
    extra: dict[str, str] = field(default_factory=dict)


def class_by_name(session: Session, project_id: int, name: str, create: bool = False) -> ImageClass:
    cls = session.scalar(
        select(ImageClass).where(ImageClass.project_id == project_id, ImageClass.name == name)
    )
    if cls is None:
        if not create:
            raise LookupError(f"project {project_id} has no class {name!r}")
        cls = ImageClass(project_id=project_id, name=name)
        session.add(cls)
        session.flush()
    return cls


def add_image(
    session: Session,
    store: ImageStore,
    project_id: int,
    data: bytes,
    label_id: int | None,
    provenance: Provenance,
) -> tuple[Image, bool]:
    """Store the bytes and return (image, created).

    An exact duplicate (same SHA-256 in the project) is not stored twice: its
    ``seen_count`` goes up and the first provenance is kept; a different class it arrives
    under is kept in ``other_label_ids`` for a reviewer to settle. Safe to repeat.
    """
    sha = store.put(data)
    existing = session.scalar(
        select(Image).where(Image.project_id == project_id, Image.sha256 == sha)
    )
    if existing is not None:
        existing.seen_count += 1
        claims = existing.other_label_ids or []
        if label_id is not None and label_id != existing.label_id and label_id not in claims:
            existing.other_label_ids = [*claims, label_id]
        return existing, False
    fields = {k: v for k, v in vars(provenance).items() if k != "extra"}
    image = Image(
        project_id=project_id, sha256=sha, label_id=label_id, file_size=len(data), **fields
    )
    session.add(image)
    session.flush()
    return image, True


def parse_url_list(text: str) -> list[str]:
    """fastai's urls_<class>.txt: one URL per line; blank lines and # comments ignored."""
    urls = []
    for line in text.splitlines():
        line = line.strip().lstrip("\ufeff")
        if line and not line.startswith("#"):
            urls.append(line)
    return urls


def class_from_filename(filename: str) -> str | None:
    """'urls_grizzly.txt' -> 'grizzly' (the lesson's naming); None when it does not fit."""
    stem = filename.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    if stem.startswith("urls_") and len(stem) > len("urls_"):
        return stem[len("urls_") :]
    return None
