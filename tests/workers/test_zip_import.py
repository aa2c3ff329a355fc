"""Zip imports under limits: a zip bomb is refused whole, a non-image member is not stored,
and the upload is removed once imported."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from core.config import Settings
from core.db import transaction
from core.tables import Image
from tests.imagegen import imagefolder_zip
from workers.imports import ZipRefused, import_zip_job
from workers.runner import JobContext


def _upload(settings: Settings, data: bytes) -> str:
    path = settings.data_dir / "uploads" / "z.zip"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return "uploads/z.zip"


def _stored(factory: sessionmaker[Session], settings: Settings) -> tuple[int, list[Path]]:
    with transaction(factory) as s:
        rows = s.scalar(select(func.count()).select_from(Image)) or 0
    store = settings.data_dir / "images"
    return rows, [p for p in store.rglob("*") if p.is_file()] if store.exists() else []


def test_a_zip_that_expands_past_the_cap_is_refused_with_nothing_stored(
    settings: Settings, factory: sessionmaker[Session], job_context: Callable[..., JobContext]
) -> None:
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("dataset/red/0.jpg", imagefolder_zip({"red": 1}))
        # 50 MB of zeros compress to about 50 kB.
        archive.writestr("dataset/red/huge.jpg", b"\0" * 50_000_000)
    settings.zip_max_total_bytes = 10_000_000
    upload = _upload(settings, bomb.getvalue())
    with pytest.raises(ZipRefused, match="expands to"):
        import_zip_job(job_context("import_zip", {"upload": upload, "verify": False}))
    assert _stored(factory, settings) == (0, [])
    assert not (settings.data_dir / upload).exists()


def test_too_many_members_are_refused_before_any_is_read(
    settings: Settings, factory: sessionmaker[Session], job_context: Callable[..., JobContext]
) -> None:
    settings.zip_max_members = 3
    upload = _upload(settings, imagefolder_zip({"red": 2, "blue": 2}))
    with pytest.raises(ZipRefused, match="4 files; the limit is 3"):
        import_zip_job(job_context("import_zip", {"upload": upload, "verify": False}))
    assert _stored(factory, settings) == (0, [])


def test_only_images_are_stored_and_the_upload_goes_once_imported(
    settings: Settings, factory: sessionmaker[Session], job_context: Callable[..., JobContext]
) -> None:
    data = imagefolder_zip(
        {"red": 2},
        {"dataset/red/notes.jpg": b"#!/bin/sh\nrm -rf /\n", "dataset/red/page.png": b"<html>"},
    )
    upload = _upload(settings, data)
    result = import_zip_job(job_context("import_zip", {"upload": upload, "verify": False}))
    assert result["added"] == 2 and result["skipped"] == {"not an image": 2}
    assert _stored(factory, settings)[0] == 2
    assert not (settings.data_dir / upload).exists()
