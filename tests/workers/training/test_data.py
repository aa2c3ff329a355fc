"""The dataset from the database: which images, which classes, a split that stays put."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image as PILImage
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core.config import Settings
from core.db import transaction
from core.preprocess import prepare
from core.store import image_store
from core.tables import Image, ImageState
from workers.training.data import (
    MAX_TRAIN_ASPECT,
    ImageCache,
    ImageDataset,
    decode_threads,
    in_validation,
    labelled_images,
    load_split,
    train_source_side,
)
from workers.training.finetune import make_loaders
from workers.training.fit import to_device


def _split(factory: sessionmaker[Session], settings: Settings, project_id: int, seed: int = 42):
    with transaction(factory) as s:
        rows = labelled_images(s, project_id)
    return load_split(rows, image_store(settings), 0.2, seed)


def test_only_ok_labelled_images_and_classes_by_id(
    images: Callable[..., list[int]],
    factory: sessionmaker[Session],
    settings: Settings,
    project_id: int,
) -> None:
    ok = images(per_class=6, classes=("grizzly", "black"))
    images(per_class=2, classes=("grizzly",), seed=1, state=ImageState.rejected)
    images(per_class=2, classes=("black",), seed=2, state=ImageState.pending)
    deleted = images(per_class=2, classes=("teddy",), seed=3, state=ImageState.deleted)
    with transaction(factory) as s:
        unlabelled = s.get(Image, ok[0])
        assert unlabelled is not None
        unlabelled.label_id = None
    split = _split(factory, settings, project_id)
    used = {x.image_id for x in split.train + split.valid}
    assert used == set(ok[1:])
    # "teddy" has only a deleted image: it is not a class of this dataset.
    assert split.classes == ["grizzly", "black"]
    assert not used & set(deleted)


def test_split_is_stable_when_data_changes(
    images: Callable[..., list[int]],
    factory: sessionmaker[Session],
    settings: Settings,
    project_id: int,
) -> None:
    images(per_class=30)
    before = _split(factory, settings, project_id)
    assert 0.05 < len(before.valid) / (len(before.train) + len(before.valid)) < 0.4
    # Clean: delete a few images and relabel one; then more images arrive.
    with transaction(factory) as s:
        rows = s.scalars(select(Image).order_by(Image.id)).all()
        for image in rows[:5]:
            image.state = ImageState.deleted
        rows[10].label_id = rows[-1].label_id
        gone = {image.id for image in rows[:5]}
    images(per_class=10, seed=7)
    after = _split(factory, settings, project_id)
    valid_before = {x.image_id for x in before.valid} - gone
    valid_after = {x.image_id for x in after.valid}
    assert valid_before <= valid_after
    assert not {x.image_id for x in before.train} & valid_after
    # Another seed is another split.
    other = _split(factory, settings, project_id, seed=7)
    assert {x.image_id for x in other.valid} != valid_after
    assert before.version != after.version


def test_in_validation_fraction() -> None:
    hits = sum(in_validation(42, f"{n:064x}", 0.2) for n in range(5000))
    assert 900 < hits < 1100


def test_validation_input_is_what_predict_prepares(
    images: Callable[..., list[int]],
    factory: sessionmaker[Session],
    settings: Settings,
    project_id: int,
) -> None:
    images(per_class=5)
    split = _split(factory, settings, project_id)
    samples = split.train + split.valid
    dataset = ImageDataset(samples, ImageCache(24), "valid", 24)
    tensor, label = dataset[0]
    expected = prepare(samples[0].path.read_bytes(), 24)
    assert tensor.shape == (3, 24, 24) and label == samples[0].label
    assert tensor.dtype == torch.uint8
    # The batch is normalised where the model runs; the numbers are predict's.
    batch = to_device(torch.stack([tensor, dataset[1][0]]), torch.device("cpu"))
    assert batch.dtype == torch.float32
    np.testing.assert_allclose(batch[0].numpy(), expected, atol=1e-5)


def test_augmented_and_plain_training_inputs(
    images: Callable[..., list[int]],
    factory: sessionmaker[Session],
    settings: Settings,
    project_id: int,
) -> None:
    images(per_class=3)
    split = _split(factory, settings, project_id)
    cache = ImageCache(train_source_side(24))
    cache.preload([s.path for s in split.train])
    plain = ImageDataset(split.train, cache, "plain", 24)
    tensor, _ = plain[0]
    assert tensor.shape == (3, 24, 24) and tensor.dtype == torch.uint8
    assert torch.equal(plain[0][0], plain[0][0])
    # Augmented training images are whole, as cached; the loader augments each batch.
    loaders = make_loaders(split, 24, 4, torch.device("cpu"), seed=0)
    source, _ = loaders.train.loader.dataset[0]  # type: ignore[attr-defined]
    assert source.shape[0] == 3 and min(source.shape[1:]) == train_source_side(24)
    torch.manual_seed(0)
    batches = [x for x, _ in loaders.train]
    assert len(batches) == len(loaders.train) == len(split.train) // 4
    for batch in batches:
        assert batch.shape == (4, 3, 24, 24) and batch.dtype == torch.float32
        # ImageNet-normalised: roughly centred, not in [0, 1] or [0, 255].
        assert float(batch.min()) > -3 and float(batch.max()) < 3 and float(batch.min()) < 0
    again = [x for x, _ in loaders.train]
    assert not torch.equal(batches[0], again[0])
    # TrainParams.flip reaches the batch augmentation (the rank job's fold models pass
    # their recipe's too: workers/cross_validation.py).
    assert loaders.train.augment.warp.p_flip == 0.5  # type: ignore[attr-defined]
    unflipped = make_loaders(split, 24, 4, torch.device("cpu"), seed=0, flip=False)
    assert unflipped.train.augment.warp.p_flip == 0.0  # type: ignore[attr-defined]


def test_a_panorama_is_scaled_to_the_widest_training_aspect(tmp_path: Path) -> None:
    path = tmp_path / "panorama.jpg"
    PILImage.new("RGB", (1000, 100), (10, 200, 30)).save(path)
    square = tmp_path / "square.jpg"
    PILImage.new("RGB", (300, 300), (10, 200, 30)).save(square)
    cache = ImageCache(30, max_aspect=MAX_TRAIN_ASPECT)
    cache.preload([path, square])
    assert MAX_TRAIN_ASPECT == 3.0
    assert cache.get(path).shape == (9, 90, 3)  # long side 3 x 30
    assert cache.get(path).flags.writeable  # torch.from_numpy warns on read-only arrays
    assert cache.get(square).shape == (30, 30, 3)
    # Not cached (over the budget): decoded the same way.
    assert ImageCache(30, budget=0, max_aspect=MAX_TRAIN_ASPECT).get(path).shape == (9, 90, 3)
    # Without a limit (validation), the whole width.
    assert ImageCache(30).get(path).shape == (30, 300, 3)


def test_photos_are_decoded_on_threads_and_small_files_on_one(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    small, photos = [], []
    for n in range(3):
        icon = tmp_path / f"icon{n}.jpg"
        PILImage.new("RGB", (48, 48), (n, 100, 200)).save(icon)
        small.append(icon)
        photo = tmp_path / f"photo{n}.jpg"
        noise = rng.integers(0, 255, (384, 512, 3), dtype=np.uint8)
        PILImage.fromarray(noise).save(photo, quality=90)
        photos.append(photo)
    assert decode_threads(small) == 1
    assert decode_threads(photos) == 4
    assert decode_threads([tmp_path / "gone.jpg"]) == 1
    # Either way every image is decoded, in order.
    for paths in (small, photos):
        cache = ImageCache(32)
        cache.preload(paths)
        assert [cache.get(p).shape[0] for p in paths] == [32] * 3 and len(cache.arrays) == 3
