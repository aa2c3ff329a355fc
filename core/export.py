"""Exports of the cleaned dataset: fastai's cleaned.csv and an ImageFolder archive."""

from __future__ import annotations

import csv
import io
import re
import zipfile
from collections.abc import Iterator
from typing import IO

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.store import ImageStore
from core.tables import Image, ImageClass, ImageState


def export_rows(session: Session, project_id: int) -> Iterator[tuple[Image, str]]:
    """Images that belong in the cleaned dataset (ok, labelled), with their class name."""
    rows = session.execute(
        select(Image, ImageClass.name)
        .join(ImageClass, Image.label_id == ImageClass.id)
        .where(Image.project_id == project_id, Image.state == ImageState.ok)
        .order_by(ImageClass.name, Image.id)
    )
    yield from rows


# A spreadsheet runs a cell that starts with one of these as a formula (CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(text: str) -> str:
    """A class name as a spreadsheet shows it and never runs: a leading quote, as OWASP
    advises, before a formula character."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


# A class name becomes one folder of the archive. Separators, "." and ".." would climb out
# of the folder where someone unpacks it (zip slip), a drive colon too on Windows.
NOT_IN_FOLDER = re.compile(r"[/\\:\x00-\x1f]")


def folder_name(label: str) -> str:
    name = NOT_IN_FOLDER.sub("_", safe_cell(label))
    return "_" + name if name in ("", ".", "..") else name


def member_name(image: Image, label: str) -> str:
    # The same relative path in cleaned.csv and in the archive, so fastai's
    # ImageDataLoaders.from_csv(path, "cleaned.csv", folder=".") reads the unpacked zip;
    # the folder is the neutralised class name so that both cells of a row are safe.
    return f"{folder_name(label)}/{image.sha256[:20]}.jpg"


def cleaned_csv(session: Session, project_id: int) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["name", "label"])
    for image, label in export_rows(session, project_id):
        writer.writerow([member_name(image, label), safe_cell(label)])
    return out.getvalue()


def write_imagefolder_zip(
    session: Session, project_id: int, store: ImageStore, target: IO[bytes]
) -> int:
    """Write <class>/<name>.jpg for every cleaned image plus cleaned.csv; return the count."""
    count = 0
    # JPEGs do not compress further: storing them is as small and much faster.
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_STORED) as archive:
        for image, label in export_rows(session, project_id):
            try:
                data = store.read(image.sha256, "normal")
            except FileNotFoundError:
                continue
            archive.writestr(member_name(image, label), data)
            count += 1
        archive.writestr("cleaned.csv", cleaned_csv(session, project_id))
    return count
