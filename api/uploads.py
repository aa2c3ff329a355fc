"""Uploaded files written to disk in chunks, under a byte limit, removed when refused."""

from __future__ import annotations

from pathlib import Path

from fastapi import HTTPException, UploadFile, status


def save_upload(upload: UploadFile, target: Path, limit: int) -> int:
    target.parent.mkdir(parents=True, exist_ok=True)
    size = 0
    with target.open("wb") as out:
        while chunk := upload.file.read(1024 * 1024):
            size += len(chunk)
            if size > limit:
                out.close()
                target.unlink(missing_ok=True)
                raise HTTPException(
                    status.HTTP_413_CONTENT_TOO_LARGE, f"{upload.filename} is over {limit} bytes"
                )
            out.write(chunk)
    return size
