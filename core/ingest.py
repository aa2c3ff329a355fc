"""Adding raw image bytes to a project: store once by content, one row per (project, sha256)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.store import ImageStore
from core.tables import Image, ImageClass


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


@dataclass
class NewImage:
    data: bytes
    label_id: int | None
    provenance: Provenance


def add_image(
    session: Session,
    store: ImageStore,
    project_id: int,
    data: bytes,
    label_id: int | None,
    provenance: Provenance,
) -> tuple[Image, bool]:
    """Store the bytes and return (image, created); see ``add_images``."""
    [added] = add_images(session, store, project_id, [NewImage(data, label_id, provenance)])
    return added


def add_images(
    session: Session, store: ImageStore, project_id: int, items: Sequence[NewImage]
) -> list[tuple[Image, bool]]:
    """Store each file's bytes and return (image, created) for each, in order.

    An exact duplicate (same SHA-256 in the project, or earlier in ``items``) is not
    stored twice: its ``seen_count`` goes up and the first provenance is kept; a different
    class it arrives under is kept in ``other_label_ids`` for a reviewer to settle. Safe to
    repeat. One query finds the known files and one flush inserts the new rows, so a
    batch costs about as much as a single image.
    """
    shas = [store.put(item.data) for item in items]
    known: dict[str, Image] = {}
    for start in range(0, len(shas), 500):  # SQLite's bound-parameter limit
        chunk = set(shas[start : start + 500])
        query = select(Image).where(Image.project_id == project_id, Image.sha256.in_(chunk))
        known.update((image.sha256, image) for image in session.scalars(query))
    results: list[tuple[Image, bool]] = []
    for sha, item in zip(shas, items, strict=True):
        existing = known.get(sha)
        if existing is not None:
            existing.seen_count += 1
            claims = existing.other_label_ids or []
            label_id = item.label_id
            if label_id is not None and label_id != existing.label_id and label_id not in claims:
                existing.other_label_ids = [*claims, label_id]
            results.append((existing, False))
            continue
        fields = {k: v for k, v in vars(item.provenance).items() if k != "extra"}
        image = Image(
            project_id=project_id,
            sha256=sha,
            label_id=item.label_id,
            file_size=len(item.data),
            seen_count=1,
            **fields,
        )
        session.add(image)
        known[sha] = image
        results.append((image, True))
    session.flush()
    return results


def parse_url_list(text: str | bytes) -> list[str]:
    """URLs of a fastai ``urls_<class>.txt``: one per line; blank lines and ``#`` comments skipped.

    Lines are kept as written (no scheme or syntax filtering) so that a bad line shows up
    as a failed URL with its reason instead of silently disappearing.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8-sig", errors="replace")
    urls = []
    for line in text.lstrip("\ufeff").splitlines():
        url = line.strip()
        if url and not url.startswith("#"):
            urls.append(url)
    return urls


def class_from_filename(filename: str) -> str | None:
    """'urls_grizzly.txt' -> 'grizzly' (the lesson's naming); None when it does not fit."""
    stem = filename.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    if stem.startswith("urls_") and len(stem) > len("urls_"):
        return stem[len("urls_") :]
    return None
