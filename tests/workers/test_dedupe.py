"""Perceptual hashes and near-duplicate grouping."""

from __future__ import annotations

import io
import random

from PIL import Image as PILImage
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core.db import transaction
from core.tables import Image, ImageClass, ImageState
from workers.dedupe import NEAR_DUPLICATE_BITS, hamming, near_pairs, phash, regroup


def scene(seed: int, size: tuple[int, int] = (320, 240)) -> PILImage.Image:
    """A distinct picture per seed: a zoomed region of the Mandelbrot set."""
    rng = random.Random(seed)
    x, y, span = rng.uniform(-2.0, 0.3), rng.uniform(-1.0, 0.6), rng.uniform(0.3, 1.2)
    return PILImage.effect_mandelbrot(size, (x, y, x + span, y + span * 0.75), 80).convert("RGB")


def recompress(image: PILImage.Image, size: tuple[int, int], quality: int) -> PILImage.Image:
    buffer = io.BytesIO()
    image.resize(size).save(buffer, "JPEG", quality=quality)
    return PILImage.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def test_phash_survives_resizing_and_recompression() -> None:
    for seed in range(5):
        original = scene(seed)
        copy = recompress(original, (160, 120), quality=60)
        assert hamming(phash(original), phash(copy)) <= NEAR_DUPLICATE_BITS


def test_phash_tells_different_pictures_apart() -> None:
    hashes = [phash(scene(seed)) for seed in range(12)]
    assert all(len(h) == 16 for h in hashes)
    for i in range(len(hashes)):
        for j in range(i + 1, len(hashes)):
            assert hamming(hashes[i], hashes[j]) > NEAR_DUPLICATE_BITS


def test_near_pairs_matches_brute_force() -> None:
    rng = random.Random(7)
    base = [rng.getrandbits(64) for _ in range(40)]
    values = base + [b ^ (1 << rng.randrange(64)) ^ (1 << rng.randrange(64)) for b in base[:10]]
    hashes = [f"{v:016x}" for v in values]
    expected = {
        (i, j)
        for i in range(len(hashes))
        for j in range(len(hashes))
        if i != j and hamming(hashes[i], hashes[j]) <= 3
    }
    assert set(near_pairs(hashes, range(len(hashes)), threshold=3)) == expected


def add(session: Session, project_id: int, n: int, phash: str, label_id: int | None) -> Image:
    image = Image(project_id=project_id, sha256=f"{n:064x}", phash=phash, label_id=label_id)
    image.state = ImageState.ok
    session.add(image)
    session.flush()
    return image


def test_regroup_links_later_copies_to_the_first_and_flags_cross_class(
    factory: sessionmaker[Session], project_id: int
) -> None:
    with transaction(factory) as s:
        a = ImageClass(project_id=project_id, name="grizzly")
        b = ImageClass(project_id=project_id, name="black")
        s.add_all([a, b])
        s.flush()
        first = add(s, project_id, 1, "ffff0000ffff0000", a.id)
        same_class = add(s, project_id, 2, "ffff0000ffff0001", a.id)
        other = add(s, project_id, 3, "0123456789abcdef", b.id)
        ids = (first.id, same_class.id, other.id)
        summary = regroup(s, project_id, new_ids=ids)
    assert (summary.groups, summary.near_duplicates, summary.cross_class) == (1, 1, [])

    with transaction(factory) as s:
        late = add(s, project_id, 4, "ffff0000ffff0003", b.id)
        summary = regroup(s, project_id, new_ids=[late.id])
        late_id = late.id
    assert summary.cross_class == [
        {"first_id": ids[0], "image_ids": [ids[0], ids[1], late_id], "label_ids": [a.id, b.id]}
    ]
    with transaction(factory) as s:
        links = dict(s.execute(select(Image.id, Image.duplicate_of_id)).all())
        versions = dict(s.execute(select(Image.id, Image.version)).all())
    assert links == {ids[0]: None, ids[1]: ids[0], ids[2]: None, late_id: ids[0]}
    assert versions[ids[1]] == 2  # the link went through the ORM's version counter

    with transaction(factory) as s:
        s.get_one(Image, ids[1]).state = ImageState.rejected
        summary = regroup(s, project_id)  # a full rebuild drops the rejected copy
    with transaction(factory) as s:
        links = dict(s.execute(select(Image.id, Image.duplicate_of_id)).all())
    assert links == {ids[0]: None, ids[1]: None, ids[2]: None, late_id: ids[0]}
    assert summary.groups == 1 and len(summary.cross_class) == 1
