"""The verdict on one file: decoded under limits, its normalised copy and thumbnail stored.

``verify_file`` runs in a decoder child (core.isolation); a verdict is small and
picklable so that only it crosses back to the parent.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image as PILImage

from core.decode import DecodeLimits, Reason, Rejected, decode, shrink
from core.isolation import Outcome
from core.store import ImageStore
from workers.dedupe import phash


@dataclass(frozen=True)
class Verdict:
    sha256: str
    reason: str | None = None
    format: str | None = None
    width: int | None = None
    height: int | None = None
    phash: str | None = None


def verify_file(sha256: str, store: ImageStore, limits: DecodeLimits) -> Verdict:
    """Decode one stored file and write its derived variants. Runs in a child process."""
    try:
        data = store.read(sha256, "raw")
    except FileNotFoundError:
        return Verdict(sha256, Reason.missing.value)
    try:
        decoded = decode(data, limits)
    except Rejected as rejected:
        width, height = rejected.size or (None, None)
        return Verdict(sha256, rejected.reason.value, rejected.format, width, height)
    thumb = shrink(decoded.image, limits.thumb_max_side)
    # Written even for images rejected as too small, so that a reviewer can restore them.
    if not store.exists(sha256, "normal"):
        store.put(_jpeg(decoded.image, 90), "normal", sha256=sha256)
    if not store.exists(sha256, "thumb"):
        store.put(_jpeg(thumb, 85), "thumb", sha256=sha256)
    small = min(decoded.width, decoded.height) < limits.min_side
    return Verdict(
        sha256,
        Reason.too_small.value if small else None,
        decoded.format,
        decoded.width,
        decoded.height,
        phash(thumb),
    )


def _jpeg(image: PILImage.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def verdict_of(outcome: Outcome[str, Verdict]) -> Verdict:
    if outcome.result is not None:
        return outcome.result
    if outcome.failure is not None:
        return Verdict(outcome.item, outcome.failure.value)
    # Not the image's fault (decode() rejects every bad file): a bug or the store failing.
    raise RuntimeError(f"verifying {outcome.item} failed: {outcome.error}")
