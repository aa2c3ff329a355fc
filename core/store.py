"""Content-addressed image store.

Files are named by their SHA-256 and never overwritten or deleted by a cleaning decision.
Three variants per image: the raw download, a normalised RGB copy (what training reads)
and a thumbnail (what the UI shows). One small interface, so that an S3-compatible bucket
can replace the directory when workers spread over machines.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Literal

from core.config import Settings

Variant = Literal["raw", "normal", "thumb"]


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ImageStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, sha256: str, variant: Variant = "raw") -> Path:
        suffix = "" if variant == "raw" else ".jpg"
        return self.root / variant / sha256[:2] / f"{sha256}{suffix}"

    def exists(self, sha256: str, variant: Variant = "raw") -> bool:
        return self.path(sha256, variant).exists()

    def put(self, data: bytes, variant: Variant = "raw", sha256: str | None = None) -> str:
        """Store bytes under their hash (or the given one for derived variants); return it."""
        digest = sha256 or sha256_bytes(data)
        target = self.path(digest, variant)
        if target.exists():
            return digest
        target.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename: a reader never sees half a file, and two writers of
        # the same content race harmlessly.
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return digest

    def read(self, sha256: str, variant: Variant = "raw") -> bytes:
        return self.path(sha256, variant).read_bytes()


def image_store(settings: Settings) -> ImageStore:
    """The deployment's image store: the one place that says where images live."""
    return ImageStore(settings.data_dir / "images")
