"""A demo project that needs no internet: scikit-learn's handwritten digits as PNG files.

A few labels are deliberately wrong, so that ranking by loss has something to find.
"""

from __future__ import annotations

import io
import random
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
from PIL import Image as PILImage
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.config import Settings
from core.ingest import Provenance, add_image
from core.projects import create_project
from core.schemas import ClassIn, ProjectIn
from core.store import image_store
from core.tables import User

NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
WRONG_LABEL_RATE = 0.03


def digit_png(pixels: np.ndarray, size: int = 64) -> bytes:
    # The digits are 8x8 with values 0..16; scale to 0..255 and enlarge so the
    # images pass the minimum-size check and look like something in the browser.
    gray = (255 - pixels.reshape(8, 8) * 255 / 16).astype(np.uint8)
    image = PILImage.fromarray(gray, mode="L").resize((size, size), PILImage.Resampling.BICUBIC)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


@dataclass(frozen=True)
class DemoImage:
    filename: str
    digit: str
    label: str
    png: bytes


def demo_images(per_class: int = 60, seed: int = 0) -> Iterator[DemoImage]:
    """Up to per_class digits of each kind; about 3% carry a wrong label on purpose."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = random.Random(seed)
    taken = dict.fromkeys(range(10), 0)
    for index, (pixels, target) in enumerate(zip(digits.data, digits.target, strict=True)):
        digit = int(target)
        if taken[digit] >= per_class:
            continue
        taken[digit] += 1
        label = digit
        if rng.random() < WRONG_LABEL_RATE:
            label = rng.choice([d for d in range(10) if d != digit])
        yield DemoImage(f"digit-{index:04d}.png", NAMES[digit], NAMES[label], digit_png(pixels))


def write_demo_zip(target: BinaryIO, per_class: int = 60) -> int:
    """The demo as a zip in ImageFolder layout (digits/<label>/<file>.png), for importing."""
    count = 0
    with zipfile.ZipFile(target, "w") as archive:
        for image in demo_images(per_class):
            archive.writestr(f"digits/{image.label}/{image.filename}", image.png)
            count += 1
    return count


def create_demo_project(
    session: Session, settings: Settings, username: str, per_class: int = 60
) -> tuple[int, int]:
    owner = session.scalar(select(User).where(User.username == username))
    if owner is None:
        raise LookupError(f"no user {username!r}; run `winnow createuser {username}` first")
    project = create_project(
        session,
        ProjectIn(
            name="Handwritten digits (demo)",
            description=(
                "scikit-learn's 8x8 digits enlarged to 64x64. About 3% of the labels are wrong "
                "on purpose: train, rank, and find them at the top of the review queue."
            ),
            classes=[ClassIn(name=n) for n in NAMES],
        ),
        owner.id,
    )
    class_ids = {c.name: c.id for c in project.classes}
    store = image_store(settings)
    count = 0
    for image in demo_images(per_class):
        prov = Provenance(source="demo", filename=image.filename, title=image.digit)
        add_image(session, store, project.id, image.png, class_ids[image.label], prov)
        count += 1
    return project.id, count
