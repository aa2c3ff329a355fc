"""A generated, learnable image set for the benches, on disk and in a throw-away Winnow.

Each class is a hue: an ellipse or a square (at random) in that hue on a noisy grey
background, at a random place and size. Learnable from random initialisation in a few
epochs, which is what a bench without downloadable weights needs.
"""

from __future__ import annotations

import io
import random
import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from core.config import Settings  # noqa: E402
from core.db import Base, make_engine, make_session_factory, transaction  # noqa: E402
from core.ingest import Provenance, add_image, class_by_name  # noqa: E402
from core.store import LocalStore  # noqa: E402
from core.tables import ImageState, Project  # noqa: E402
from workers.runner import JobContext, local_job  # noqa: E402

HUES = {
    "red": (200, 50, 40),
    "green": (50, 170, 60),
    "blue": (50, 80, 200),
    "yellow": (210, 190, 40),
}
CLASSES = tuple(HUES)


def jpeg(name: str, rng: random.Random, size: int) -> bytes:
    hue = name
    width, height = size + rng.randrange(0, size // 3), size + rng.randrange(0, size // 3)
    grey = rng.randrange(80, 170)
    background = (grey, grey, grey)
    image = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(image)
    for _ in range(8):
        x, y, r = rng.randrange(width), rng.randrange(height), rng.randrange(2, size // 8)
        grey = rng.randrange(40, 220)  # distractors without hue
        draw.ellipse((x - r, y - r, x + r, y + r), fill=(grey, grey, grey))
    r = rng.randrange(size // 5, size // 3)
    cx, cy = rng.randrange(r, width - r), rng.randrange(r, height - r)
    colour = tuple(max(0, min(255, c + rng.randrange(-40, 40))) for c in HUES[hue])
    box = (cx - r, cy - r, cx + r, cy + r)
    if rng.random() < 0.5:
        draw.ellipse(box, fill=colour)
    else:
        draw.rectangle(box, fill=colour)
    image = image.filter(ImageFilter.GaussianBlur(0.6))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def write_folder(root: Path, per_class: int, size: int, seed: int = 0) -> list[Path]:
    """An ImageFolder tree root/<class>/<n>.jpg; the same files for every framework."""
    rng = random.Random(seed)
    paths = []
    for name in CLASSES:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            path = root / name / f"{i:04d}.jpg"
            path.write_bytes(jpeg(name, rng, size))
            paths.append(path)
    return paths


def winnow_project(data_dir: Path, paths: list[Path]) -> tuple[Settings, int]:
    """A SQLite Winnow with these images verified and labelled by their folder."""
    settings = Settings(data_dir=data_dir, secret_key="bench")
    data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.db_url)
    Base.metadata.create_all(engine)
    store = LocalStore(data_dir)
    with transaction(make_session_factory(engine)) as s:
        project = Project(name="bench")
        s.add(project)
        s.flush()
        for path in paths:
            cls = class_by_name(s, project.id, path.parent.name, create=True)
            data = path.read_bytes()
            image, _ = add_image(s, store, project.id, data, cls.id, Provenance(filename=path.name))
            store.put(data, "normal", sha256=image.sha256)
            image.state = ImageState.ok
        project_id = project.id
    engine.dispose()
    return settings, project_id


def job_context(
    settings: Settings, project_id: int, kind: str, params: dict[str, object]
) -> JobContext:
    factory = make_session_factory(make_engine(settings.db_url))
    return local_job(factory, settings, project_id, kind, dict(params))
