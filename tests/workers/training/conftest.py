"""A small learnable image set in the database: each class a shape in its own colour."""

from __future__ import annotations

import io
import random
from collections.abc import Callable

import pytest
from PIL import Image, ImageDraw
from sqlalchemy.orm import Session, sessionmaker

from core.config import Settings
from core.db import transaction
from core.ingest import Provenance, add_image, class_by_name
from core.store import ImageStore, image_store
from core.tables import ImageState

HUES = [(200, 40, 40), (40, 60, 200), (40, 170, 60), (200, 170, 30)]


def synth_jpeg(label: int, rng: random.Random, size: int) -> bytes:
    noise = [rng.randrange(90, 160) for _ in range(3)]
    image = Image.new("RGB", (size, size + rng.randrange(0, size // 2)), tuple(noise))
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x, y = rng.randrange(size), rng.randrange(size)
        grey = rng.randrange(60, 200)
        draw.point((x, y), fill=(grey, grey, grey))
    r = rng.randrange(size // 5, size // 3)
    cx, cy = rng.randrange(r, size - r), rng.randrange(r, size - r)
    colour = tuple(max(0, min(255, c + rng.randrange(-30, 30))) for c in HUES[label % len(HUES)])
    box = (cx - r, cy - r, cx + r, cy + r)
    if label % 2 == 0:
        draw.ellipse(box, fill=colour)
    else:
        draw.rectangle(box, fill=colour)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def add_labelled(
    factory: sessionmaker[Session],
    store: ImageStore,
    project_id: int,
    per_class: int,
    classes: tuple[str, ...],
    size: int = 40,
    seed: int = 0,
    state: ImageState = ImageState.ok,
) -> list[int]:
    """Add images as the verify job leaves them: state ok and a normalised copy."""
    rng = random.Random(seed)
    ids = []
    with transaction(factory) as s:
        for label, name in enumerate(classes):
            cls = class_by_name(s, project_id, name, create=True)
            for _ in range(per_class):
                data = synth_jpeg(label, rng, size)
                image, _ = add_image(s, store, project_id, data, cls.id, Provenance())
                store.put(data, "normal", sha256=image.sha256)
                image.state = state
                ids.append(image.id)
    return ids


@pytest.fixture
def images(
    factory: sessionmaker[Session], settings: Settings, project_id: int
) -> Callable[..., list[int]]:
    store = image_store(settings)

    def make(
        per_class: int = 12,
        classes: tuple[str, ...] = ("grizzly", "black"),
        seed: int = 0,
        state: ImageState = ImageState.ok,
    ) -> list[int]:
        return add_labelled(factory, store, project_id, per_class, classes, seed=seed, state=state)

    return make
