"""Generated test images: two learnable classes of coloured, noisy pictures."""

from __future__ import annotations

import io
import random
import zipfile

from PIL import Image, ImageDraw

COLOURS = {"red": (200, 40, 40), "blue": (40, 60, 200), "green": (40, 170, 60)}


def picture(colour: str, seed: int, size: tuple[int, int] = (64, 48), fmt: str = "JPEG") -> bytes:
    """A noisy image dominated by one colour, with a random shape: unique bytes per seed."""
    rng = random.Random(f"{colour}-{seed}")
    base = COLOURS[colour]
    image = Image.new("RGB", size, tuple(min(255, c + rng.randint(-30, 30)) for c in base))
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x0, y0 = rng.randrange(size[0]), rng.randrange(size[1])
        x1, y1 = x0 + rng.randint(4, 20), y0 + rng.randint(4, 20)
        shade = tuple(min(255, max(0, c + rng.randint(-80, 80))) for c in base)
        draw.ellipse((x0, y0, x1, y1), fill=shade)
    out = io.BytesIO()
    image.save(out, format=fmt, quality=90) if fmt == "JPEG" else image.save(out, format=fmt)
    return out.getvalue()


def imagefolder_zip(per_class: dict[str, int], extra: dict[str, bytes] | None = None) -> bytes:
    """A zip in ImageFolder layout (dataset/<class>/<n>.jpg) plus any extra members."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for colour, count in per_class.items():
            for n in range(count):
                archive.writestr(f"dataset/{colour}/{n:03d}.jpg", picture(colour, n))
        for name, data in (extra or {}).items():
            archive.writestr(name, data)
    return out.getvalue()
