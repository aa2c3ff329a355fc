"""The dataset of a project: labelled images from the database, a stable split, transforms.

The validation split is decided per image by a hash of (seed, sha256) -- the sha256 of the
first image of its near-duplicate group, so that near-copies stay on one side -- not by
shuffling a list: adding, deleting or relabelling other images never moves an image between
train and validation, so a retrain after cleaning is compared on the same validation images.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image as PILImage
from sqlalchemy import select
from sqlalchemy.orm import Session, aliased
from torch.utils.data import Dataset

from core.preprocess import center_crop, decode_rgb, resize_short
from core.store import ImageStore
from core.tables import Image, ImageClass, ImageState

# Training crops are cut from a copy a little larger than the input, as fastai's
# RandomResizedCrop cuts from the full image; a quarter more keeps memory modest.
TRAIN_SOURCE_SCALE = 1.25
# Decoded images are kept in memory up to this many bytes; the rest are decoded per batch.
CACHE_BYTES = 2 * 1024**3
# Training images longer than this (long side / short side) are scaled down to it. A batch is
# augmented on a canvas as large as its largest image (augment.collate_sources): one 10:1
# panorama would make every image of its batch that wide.
MAX_TRAIN_ASPECT = 3.0


@dataclass(frozen=True)
class Sample:
    image_id: int
    sha256: str
    label: int
    path: Path
    # The sha256 of the first image of its near-duplicate group (its own when alone):
    # splits and folds go by group, so near-copies never sit on both sides of a split.
    group: str = ""

    @property
    def split_key(self) -> str:
        return self.group or self.sha256


@dataclass
class DataSplit:
    classes: list[str]
    class_ids: list[int]
    train: list[Sample]
    valid: list[Sample]
    missing: int = 0

    @property
    def version(self) -> str:
        """A digest of exactly which images with which labels were used."""
        digest = hashlib.sha256()
        for sample in sorted(self.train + self.valid, key=lambda s: s.image_id):
            digest.update(f"{sample.image_id}:{sample.sha256}:{sample.label};".encode())
        return digest.hexdigest()[:16]


def in_validation(seed: int, sha256: str, valid_pct: float) -> bool:
    digest = hashlib.sha256(f"{seed}:{sha256}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < valid_pct


def fold_of(seed: int, sha256: str, folds: int) -> int:
    digest = hashlib.sha256(f"fold:{seed}:{sha256}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % folds


@dataclass(frozen=True)
class Labelled:
    """An ok, labelled image as the database has it: what a dataset is made of."""

    image_id: int
    sha256: str
    label_id: int
    label: str
    group: str


def labelled_images(session: Session, project_id: int) -> list[Labelled]:
    """Ok, labelled images of the project, by id, with their near-duplicate group."""
    first = aliased(Image)
    rows = session.execute(
        select(Image.id, Image.sha256, ImageClass.id, ImageClass.name, first.sha256)
        .join(ImageClass, ImageClass.id == Image.label_id)
        .outerjoin(first, first.id == Image.duplicate_of_id)
        .where(Image.project_id == project_id, Image.state == ImageState.ok)
        .order_by(Image.id)
    ).all()
    return [
        Labelled(i, sha, label_id, name, group or sha) for i, sha, label_id, name, group in rows
    ]


def load_samples(
    rows: Sequence[Labelled], store: ImageStore
) -> tuple[list[str], list[int], list[Sample], int]:
    """Images with a normalised copy, as local files; classes that have at least one, by id.

    Called outside any transaction: from a bucket, the copies this machine lacks are
    downloaded into its cache here."""
    names = {row.label_id: row.label for row in rows}
    class_ids = sorted(names)
    index = {class_id: i for i, class_id in enumerate(class_ids)}
    paths = store.fetch_many((row.sha256 for row in rows), "normal")
    samples = [
        Sample(row.image_id, row.sha256, index[row.label_id], paths[row.sha256], row.group)
        for row in rows
        if row.sha256 in paths
    ]
    return [names[c] for c in class_ids], class_ids, samples, len(rows) - len(samples)


def load_split(
    rows: Sequence[Labelled], store: ImageStore, valid_pct: float, seed: int
) -> DataSplit:
    classes, class_ids, samples, missing = load_samples(rows, store)
    train = [s for s in samples if not in_validation(seed, s.split_key, valid_pct)]
    valid = [s for s in samples if in_validation(seed, s.split_key, valid_pct)]
    return DataSplit(classes, class_ids, train, valid, missing)


@dataclass
class ImageCache:
    """Decoded images (HWC uint8) at a fixed shorter side, in memory within a byte budget."""

    short_side: int
    budget: int = CACHE_BYTES
    # Longer images are scaled down until their long side is short_side * max_aspect.
    max_aspect: float | None = None
    arrays: dict[Path, np.ndarray] = field(default_factory=dict)
    used: int = 0

    def get(self, path: Path) -> np.ndarray:
        array = self.arrays.get(path)
        return array if array is not None else self.decode(path)

    def decode(self, path: Path) -> np.ndarray:
        array = decode_rgb(path, self.short_side)
        height, width = array.shape[:2]
        if self.max_aspect is None or max(height, width) <= self.short_side * self.max_aspect:
            return array
        scale = self.short_side * self.max_aspect / max(height, width)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        return np.array(PILImage.fromarray(array).resize(size, PILImage.Resampling.BILINEAR))

    def preload(
        self, paths: Sequence[Path], progress: Callable[[int, int], None] | None = None
    ) -> None:
        """Decode up front, with threads where that pays (PIL releases the interpreter lock
        while libjpeg decodes)."""
        todo = [p for p in paths if p not in self.arrays]
        pool = ThreadPoolExecutor(max_workers=decode_threads(todo))
        try:
            decoded = pool.map(self.decode, todo)
            for done, (path, array) in enumerate(zip(todo, decoded, strict=True)):
                if self.used + array.nbytes <= self.budget:
                    self.arrays[path] = array
                    self.used += array.nbytes
                if progress is not None:
                    progress(done + 1, len(todo))
        finally:
            # A cancelled job (progress raised) must not wait for the rest to decode.
            pool.shutdown(wait=True, cancel_futures=True)


# Threads pay only where most of a decode runs in libjpeg, without the interpreter lock. For
# small files (icons, digits, thumbnails) the per-image Python work dominates, and threads
# fighting for the lock were slower than one: 2,000 JPEGs of 3 KB at 64 px took 0.95 s on
# two threads and 0.84 s on one; 300 photos of 512 px at 224 px 0.63 s against 1.11 s.
THREADED_DECODE_BYTES = 16_000


def decode_threads(paths: Sequence[Path]) -> int:
    """4 decoding threads for files of photo size (by the median of the first few), else 1."""
    sizes = sorted(p.stat().st_size for p in paths[:32] if p.exists())
    return 4 if sizes and sizes[len(sizes) // 2] >= THREADED_DECODE_BYTES else 1


def train_source_side(image_size: int) -> int:
    return math.ceil(image_size * TRAIN_SOURCE_SCALE)


Mode = Literal["augment", "plain", "valid"]


class ImageDataset(Dataset[tuple[torch.Tensor, int]]):
    """Samples read through an ImageCache, as CHW uint8 tensors.

    Batches are made float and normalised where the model runs (``fit.to_device``), as
    fastai's batch transforms do: a quarter of the bytes to collate and to copy to a GPU.

    valid: centre crop at exactly the cache's side, which is core.preprocess's transform.
    plain: shorter side to ``image_size``, centre crop (training images, no augmentation).
    augment: the image as cached, whole; the random augmentation runs on the batch
    (workers.training.augment: collate_sources, then BatchAugment where the model runs).
    """

    def __init__(
        self, samples: Sequence[Sample], cache: ImageCache, mode: Mode, image_size: int
    ) -> None:
        self.samples = list(samples)
        self.cache = cache
        self.mode = mode
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        sample = self.samples[index]
        array = self.cache.get(sample.path)
        size = self.image_size
        if self.mode == "augment":
            return torch.from_numpy(array).permute(2, 0, 1), sample.label
        if self.mode == "plain" and min(array.shape[:2]) != size:
            array = np.asarray(resize_short(PILImage.fromarray(array), size))
        array = np.ascontiguousarray(center_crop(array, size).transpose(2, 0, 1))
        return torch.from_numpy(array), sample.label
