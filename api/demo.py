"""A demo project that needs no internet: scikit-learn's handwritten digits as PNG files.

A few labels are deliberately wrong, so that ranking by loss has something to find.
"""

from __future__ import annotations

import io
import random

import numpy as np
from PIL import Image as PILImage
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.config import Settings
from api.ingest import Provenance, add_image
from api.models import User
from api.projects import create_project
from api.schemas import ClassIn, ProjectIn
from api.store import ImageStore

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


def create_demo_project(
    session: Session, settings: Settings, username: str, per_class: int = 60, seed: int = 0
) -> tuple[int, int]:
    from sklearn.datasets import load_digits

    owner = session.scalar(select(User).where(User.username == username))
    if owner is None:
        raise LookupError(f"no user {username!r}; run `winnow createuser {username}` first")
    digits = load_digits()
    rng = random.Random(seed)
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
    store = ImageStore(settings.data_dir / "images")
    taken = dict.fromkeys(range(10), 0)
    count = 0
    for index, (pixels, target) in enumerate(zip(digits.data, digits.target, strict=True)):
        digit = int(target)
        if taken[digit] >= per_class:
            continue
        taken[digit] += 1
        label = digit
        if rng.random() < WRONG_LABEL_RATE:
            label = rng.choice([d for d in range(10) if d != digit])
        prov = Provenance(source="demo", filename=f"digit-{index:04d}.png", title=NAMES[digit])
        add_image(session, store, project.id, digit_png(pixels), class_ids[NAMES[label]], prov)
        count += 1
    return project.id, count
