"""fastai doing the rest of what Winnow's verification does, with the lesson's own tools.

Winnow keeps, for every image that decodes, a normalised copy (longest side at most 512,
JPEG) and a thumbnail (longest side at most 160, JPEG quality 85). The lesson's way to the
first is ``resize_images(max_size=512)``; fastai has no thumbnail step, so a pass with
fastai's ``parallel`` (processes on every CPU, as ``resize_images`` uses) makes one from
each normalised copy with Pillow's ``thumbnail``. Hashes and database rows, which Winnow
also writes, are left out: the anchor does somewhat less work even here.
"""

from __future__ import annotations

import time
from pathlib import Path

NORMAL_SIDE = 512
THUMB_SIDE = 160


def _thumbnail(path: Path, dest: Path) -> None:
    from PIL import Image

    with Image.open(path) as image:
        image.thumbnail((THUMB_SIDE, THUMB_SIDE))
        image.convert("RGB").save(dest / f"{path.stem}.jpg", "JPEG", quality=85)


def normalise(src: Path, dest: Path) -> float:
    """``resize_images(src, max_size=512, dest=dest)``; its wall seconds."""
    from fastai.vision.utils import resize_images

    started = time.perf_counter()
    resize_images(src, max_size=NORMAL_SIDE, dest=dest)
    return time.perf_counter() - started


def thumbnails(src: Path, dest: Path) -> float:
    """A thumbnail of every image in ``src``, written to ``dest``; its wall seconds."""
    from fastai.vision.all import defaults, get_image_files, parallel

    dest.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    parallel(_thumbnail, get_image_files(src), dest=dest, n_workers=defaults.cpus)
    return time.perf_counter() - started
