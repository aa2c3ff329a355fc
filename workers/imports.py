"""Import of an uploaded zip in ImageFolder layout: <class>/<image> (folder name = class)."""

from __future__ import annotations

import zipfile
from functools import partial
from pathlib import PurePosixPath
from typing import Any

from core.config import Settings
from core.ingest import NewImage, Provenance, add_images, class_by_name
from core.params import ImportZipParams
from core.tables import ImageState
from workers.harvest.sniff import sniff_image
from workers.runner import JobContext
from workers.verify.streaming import Verifier, verifying_import

BATCH = 200


class ZipRefused(ValueError):
    """The zip as a whole is over a limit: nothing of it is stored."""


def _class_of(name: str, default: str | None) -> str | None:
    """The folder right above the file is its class: bears/grizzly/1.jpg -> grizzly."""
    parts = PurePosixPath(name).parts
    return parts[-2] if len(parts) >= 2 else default


def _skip(info: zipfile.ZipInfo) -> bool:
    name = PurePosixPath(info.filename)
    return (
        info.is_dir()
        or any(p.startswith((".", "__MACOSX")) for p in name.parts)
        or name.name in ("Thumbs.db", "desktop.ini", "cleaned.csv")
    )


def import_zip_job(ctx: JobContext) -> dict[str, Any]:
    params = ImportZipParams.model_validate(ctx.params)
    work = partial(_import_zip, ctx, params)
    try:
        result = verifying_import(ctx, params.verify, work, _account)
    except (ZipRefused, zipfile.BadZipFile):
        # Refused whole: a retry would refuse it again, so the upload goes now.
        ctx.store.delete(params.upload)
        raise
    # Imported: its images are in the store, and the upload would only fill the disk.
    ctx.store.delete(params.upload)
    return result


def _check_limits(members: list[zipfile.ZipInfo], settings: Settings) -> None:
    """Refuse a zip over the member count or whose members expand past the total cap,
    before anything is stored. Declared sizes bound what is read: zipfile stops a member
    at its declared size and fails its CRC when the data claims to be longer."""
    if len(members) > settings.zip_max_members:
        raise ZipRefused(
            f"the zip has {len(members)} files; the limit is {settings.zip_max_members}"
        )
    expanded = sum(info.file_size for info in members)
    if expanded > settings.zip_max_total_bytes:
        raise ZipRefused(
            f"the zip expands to {expanded} bytes; the limit is {settings.zip_max_total_bytes}"
        )


def _account(result: dict[str, Any]) -> str:
    return f"done: {result['added']} added, {result['duplicates']} duplicates"


def _import_zip(
    ctx: JobContext, params: ImportZipParams, verifier: Verifier | None
) -> dict[str, Any]:
    # A local file (from a bucket, copied into this machine's cache): zipfile seeks.
    path = ctx.store.get_file(params.upload)
    max_bytes = ctx.settings.download_max_bytes
    added = duplicates = 0
    skipped: dict[str, int] = {}
    with zipfile.ZipFile(path) as archive:
        members = [i for i in archive.infolist() if not _skip(i)]
        _check_limits(members, ctx.settings)
        classes: dict[str, int] = {}
        for start in range(0, len(members), BATCH):
            ctx.report(start, len(members), f"{added} added, {duplicates} duplicates")
            # One short transaction per batch: a redelivered job redoes at most one
            # batch, and add_image makes the redo a no-op for rows already there.
            pending: list[tuple[str, int]] = []
            with ctx.session() as session:
                items = []
                for info in members[start : start + BATCH]:
                    name = _class_of(info.filename, params.label)
                    if name is None:
                        skipped["no class folder"] = skipped.get("no class folder", 0) + 1
                        continue
                    # The declared size of a member can lie (zip bombs): read at most the cap.
                    with archive.open(info) as fh:
                        data = fh.read(max_bytes + 1)
                    if len(data) > max_bytes:
                        skipped["too large"] = skipped.get("too large", 0) + 1
                        continue
                    if sniff_image(data[:64]) is None:
                        # Only images enter the store; the rest is counted, not kept.
                        skipped["not an image"] = skipped.get("not an image", 0) + 1
                        continue
                    if name not in classes:
                        classes[name] = class_by_name(session, ctx.project_id, name, create=True).id
                    prov = Provenance(source="zip", filename=info.filename)
                    items.append(NewImage(data, classes[name], prov))
                for image, created in add_images(session, ctx.store, ctx.project_id, items):
                    added += created
                    duplicates += not created
                    if image.state is ImageState.pending:
                        pending.append((image.sha256, image.id))
            if verifier is not None:
                # After the commit: the verifier's writes must find these rows.
                verifier.submit(pending)
    return {
        "added": added,
        "duplicates": duplicates,
        "skipped": skipped,
        "classes": sorted(classes),
    }
