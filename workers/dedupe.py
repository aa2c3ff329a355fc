"""Perceptual hashes and near-duplicate groups.

A 64-bit DCT hash (pHash) survives resizing, recompression and small edits; two images
whose hashes differ in at most ``threshold`` bits are near-duplicates. Groups are the
connected components of that relation; every member but the first (lowest id) points at
the first through ``Image.duplicate_of_id``. A group whose members carry different labels
is a review item of its own: the same photo cannot be both classes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from PIL import Image as PILImage
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.tables import Image, ImageState

NEAR_DUPLICATE_BITS = 6
_HASH_SIDE = 32
_LOW = 8


@lru_cache(maxsize=1)
def _dct_matrix(n: int = _HASH_SIDE) -> np.ndarray:
    k = np.arange(n)[:, None]
    m = np.cos(np.pi * (2 * np.arange(n)[None, :] + 1) * k / (2 * n))
    m[0] /= np.sqrt(2)
    return m * np.sqrt(2 / n)


def phash(image: PILImage.Image) -> str:
    """16 hex digits: the signs of the 8x8 lowest DCT frequencies against their median."""
    gray = image.convert("L").resize((_HASH_SIDE, _HASH_SIDE), PILImage.Resampling.BILINEAR)
    pixels = np.asarray(gray, dtype=np.float64)
    d = _dct_matrix()
    low = (d @ pixels @ d.T)[:_LOW, :_LOW]
    bits = (low > np.median(low)).ravel()
    return f"{int(np.packbits(bits).view('>u8')[0]):016x}"


def hamming(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()


def near_pairs(
    hashes: Sequence[str], queries: Iterable[int], threshold: int = NEAR_DUPLICATE_BITS
) -> list[tuple[int, int]]:
    """Index pairs (i, j), i a query index, j any other index, within ``threshold`` bits."""
    values = np.array([int(h, 16) for h in hashes], dtype=np.uint64)
    rows = np.fromiter(queries, dtype=np.int64)
    pairs: list[tuple[int, int]] = []
    # Blocks of query rows against all hashes: vectorised, memory bounded at ~4M cells.
    step = max(1, 4_000_000 // max(1, len(values)))
    for start in range(0, len(rows), step):
        block = rows[start : start + step]
        distance = np.bitwise_count(values[block, None] ^ values[None, :])
        for r, j in zip(*np.nonzero(distance <= threshold), strict=True):
            if block[r] != j:
                pairs.append((int(block[r]), int(j)))
    return pairs


class _Components:
    """Union-find whose representative is the smallest id: the group's first image."""

    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def find(self, x: int) -> int:
        self.parent.setdefault(x, x)
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


@dataclass
class DuplicateSummary:
    groups: int = 0
    near_duplicates: int = 0  # images pointing at an earlier copy
    cross_class: list[dict[str, object]] = field(default_factory=list)


def regroup(
    session: Session,
    project_id: int,
    new_ids: Iterable[int] | None = None,
    threshold: int = NEAR_DUPLICATE_BITS,
) -> DuplicateSummary:
    """Update duplicate_of_id for the project's ok images; return the groups.

    With ``new_ids`` only those images are compared against all ok images and existing
    links are kept; with None every pair is compared again and links are rebuilt.
    """
    rows = session.execute(
        select(Image.id, Image.phash, Image.label_id, Image.duplicate_of_id)
        .where(Image.project_id == project_id, Image.state == ImageState.ok)
        .where(Image.phash.is_not(None))
        .order_by(Image.id)
    ).all()
    ids = [r.id for r in rows]
    components = _Components()
    if new_ids is None:
        queries: Iterable[int] = range(len(rows))
        # A full rebuild also unlinks images that left the ok state since the last one.
        stale = select(Image).where(
            Image.project_id == project_id,
            Image.state != ImageState.ok,
            Image.duplicate_of_id.is_not(None),
        )
        for image in session.scalars(stale):
            image.duplicate_of_id = None
    else:
        wanted = set(new_ids)
        queries = [i for i, r in enumerate(rows) if r.id in wanted]
        for r in rows:
            if r.duplicate_of_id is not None:
                components.union(r.id, r.duplicate_of_id)
    for i, j in near_pairs([r.phash for r in rows], queries, threshold):
        components.union(ids[i], ids[j])

    changed = {
        r.id: root for r in rows if (root := components.find(r.id)) != (r.duplicate_of_id or r.id)
    }
    if changed:
        for image in session.scalars(select(Image).where(Image.id.in_(changed))):
            # Through the ORM so that the version counter moves with the change.
            root = changed[image.id]
            image.duplicate_of_id = None if root == image.id else root
    return _summarise([(r.id, r.label_id) for r in rows], components)


def _summarise(rows: list[tuple[int, int | None]], components: _Components) -> DuplicateSummary:
    members: dict[int, list[tuple[int, int | None]]] = {}
    for image_id, label_id in rows:
        members.setdefault(components.find(image_id), []).append((image_id, label_id))
    summary = DuplicateSummary()
    for first, group in members.items():
        if len(group) < 2:
            continue
        summary.groups += 1
        summary.near_duplicates += len(group) - 1
        labels = sorted({label for _, label in group if label is not None})
        if len(labels) > 1:
            summary.cross_class.append(
                {"first_id": first, "image_ids": [i for i, _ in group], "label_ids": labels}
            )
    return summary
