"""The augmentation as v2 transforms: the composed matrices land where each part says they do,
on PIL images, tensors and batches alike, and the batch pipeline gives what the model expects."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2

from core.preprocess import normalise
from workers.training.augment import (
    BatchAugment,
    Lighting,
    SourceBatch,
    Warp,
    collate_sources,
    normalise_batch,
)

NOTHING: dict[str, Any] = {"min_scale": 1.0, "ratio": (1.0, 1.0), "p_affine": 0.0, "p_warp": 0.0}


def noise(height: int, width: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((height, width, 3)) * 255).astype(np.uint8)


def chw(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array).permute(2, 0, 1)


def warp(array: np.ndarray, transform: v2.Transform, as_tensor: bool) -> np.ndarray:
    """Apply to a PIL image or a CHW uint8 tensor; HWC uint8 back."""
    if as_tensor:
        out = transform(torch.from_numpy(array).permute(2, 0, 1).contiguous())
        return np.asarray(out.permute(1, 2, 0))
    return np.asarray(transform(Image.fromarray(array)))


@pytest.mark.parametrize("as_tensor", [False, True])
def test_with_every_part_off_it_returns_the_image_or_its_mirror(as_tensor: bool) -> None:
    image = noise(32, 32)
    transform = Warp(32, **NOTHING)
    torch.manual_seed(0)
    outputs = [warp(image, transform, as_tensor) for _ in range(20)]
    plain = sum(np.array_equal(o, image) for o in outputs)
    mirrored = sum(np.array_equal(o, image[:, ::-1]) for o in outputs)
    assert plain + mirrored == 20 and plain and mirrored


@pytest.mark.parametrize("as_tensor", [False, True])
def test_a_full_crop_of_a_larger_image_is_a_resize(as_tensor: bool) -> None:
    image = np.zeros((80, 80, 3), np.uint8)
    image[:40] = 255  # top half white
    out = warp(image, Warp(40, **NOTHING), as_tensor)
    assert out.shape == (40, 40, 3)
    assert (out[:19] == 255).all() and (out[21:] == 0).all()


def test_a_tensor_smaller_than_the_output_is_stretched_to_it() -> None:
    image = np.full((20, 30, 3), 200, np.uint8)
    out = warp(image, Warp(40, **{**NOTHING, "ratio": (1.5, 1.5)}), as_tensor=True)
    assert out.shape == (40, 40, 3)
    assert (out[2:-2, 2:-2] == 200).all()


def test_pil_and_tensor_paths_agree() -> None:
    """Pillow's perspective transform and the grid_sample path give the same pixels (up to
    rounding), edges included: black outside the image, its own edge pixels inside."""
    image = noise(60, 80, seed=1)
    transform = Warp(48)
    for seed in range(5):
        torch.manual_seed(seed)
        params = transform.make_params([Image.fromarray(image)])
        a = np.asarray(transform.transform(Image.fromarray(image), params)).astype(int)
        b = np.asarray(transform.transform(chw(image), params).permute(1, 2, 0)).astype(int)
        assert np.abs(a - b).max() <= 1


def test_a_batch_of_different_sizes_is_each_image_warped_alone() -> None:
    """Each image at the top left of the canvas, warped by its own matrix, is what Pillow
    makes of that image alone: the canvas around it is never sampled."""
    arrays = [noise(40, 56, 1), noise(52, 40, 2), noise(40, 40, 3)]
    batch, labels = collate_sources([(chw(a), i) for i, a in enumerate(arrays)])
    assert batch.images.shape == (3, 3, 52, 56) and labels.tolist() == [0, 1, 2]
    assert batch.sizes.tolist() == [[40, 56], [52, 40], [40, 40]]
    warp = Warp(32)
    torch.manual_seed(0)
    params = warp.params(batch.sizes[:, 0], batch.sizes[:, 1])
    out = warp.transform(batch.images, params)
    assert out.shape == (3, 3, 32, 32) and out.dtype == torch.uint8
    for i, array in enumerate(arrays):
        alone = warp.transform(Image.fromarray(array), {"matrices": params["matrices"][i : i + 1]})
        got = np.asarray(out[i].permute(1, 2, 0)).astype(int)
        assert np.abs(np.asarray(alone).astype(int) - got).max() <= 1


@pytest.mark.parametrize("flip", [True, False])
def test_flip_off_never_mirrors(flip: bool) -> None:
    """TrainParams.flip=False (digits, letters, signs): the batch pipeline keeps every image
    the right way round; on, about half come out mirrored."""
    image = np.zeros((32, 32, 3), np.uint8)
    image[:, :16] = 255  # left half white
    batch = SourceBatch(
        chw(image).expand(64, -1, -1, -1).contiguous(), torch.tensor([[32, 32]] * 64)
    )
    augment = BatchAugment(32, flip=flip)
    augment.warp = Warp(32, p_flip=augment.warp.p_flip, **NOTHING)
    augment.lighting = Lighting(p=0.0)
    torch.manual_seed(0)
    out = augment(batch, torch.device("cpu"))
    mirrored = int((out[:, 0, :, :8].mean((1, 2)) < out[:, 0, :, -8:].mean((1, 2))).sum())
    assert (mirrored > 16) if flip else (mirrored == 0)


def test_each_image_of_a_batch_draws_its_own_parameters() -> None:
    image = chw(noise(48, 48))
    batch = SourceBatch(image.expand(8, -1, -1, -1).contiguous(), torch.tensor([[48, 48]] * 8))
    torch.manual_seed(0)
    out = BatchAugment(32)(batch, torch.device("cpu"))
    assert len({tuple(row.flatten()[:64].tolist()) for row in out}) == 8


def test_the_same_seed_gives_the_same_augmentation() -> None:
    batch, _ = collate_sources([(chw(noise(48, 64, s)), 0) for s in range(4)])
    augment = BatchAugment(32)
    torch.manual_seed(3)
    first = [augment(batch, torch.device("cpu")) for _ in range(3)]
    torch.manual_seed(3)
    again = [augment(batch, torch.device("cpu")) for _ in range(3)]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0], first[1])
    assert first[0].shape == (4, 3, 32, 32) and first[0].dtype == torch.float32


def test_with_nothing_random_the_batch_pipeline_is_a_resize_and_normalise() -> None:
    """No crop, flip, rotation, warp or lighting: the output is the image resized to the
    model's input and normalised as core.preprocess does (a check on every constant on the way)."""
    image = np.zeros((64, 64, 3), np.uint8)
    image[:, :32] = (200, 30, 90)  # left half coloured
    batch, _ = collate_sources([(chw(image), 0)])
    augment = BatchAugment(32)
    augment.warp = Warp(32, p_flip=0.0, **NOTHING)
    augment.lighting = Lighting(p=0.0)
    out = augment(batch, torch.device("cpu"))[0]
    expected = normalise(
        np.asarray(Image.fromarray(image).resize((32, 32), Image.Resampling.BILINEAR))
    )
    np.testing.assert_allclose(out[:, :, :15].numpy(), expected[:, :, :15], atol=1e-4)
    np.testing.assert_allclose(out[:, :, 17:].numpy(), expected[:, :, 17:], atol=1e-4)


def test_rotation_and_zoom_keep_the_centre() -> None:
    image = np.zeros((64, 64, 3), np.uint8)
    image[28:36, 28:36] = 255  # a white square in the middle
    transform = Warp(64, min_scale=1.0, ratio=(1.0, 1.0), p_affine=1.0, p_warp=0.0)
    torch.manual_seed(0)
    for _ in range(10):
        out = warp(image, transform, as_tensor=False)
        assert (out[31:33, 31:33] > 200).all()
        # Nothing but the square is white: rotation by at most 10 degrees, zoom at most 1.1.
        assert (out[:20] == 0).all() and (out[44:] == 0).all()


def test_lighting_changes_brightness_within_its_range() -> None:
    image = torch.full((3, 16, 16), 100, dtype=torch.uint8)
    lighting = Lighting(p=1.0)
    torch.manual_seed(0)
    outputs = [lighting(image) for _ in range(50)]
    assert all(o.dtype == torch.uint8 for o in outputs)
    means = [float(o.float().mean()) for o in outputs]
    assert min(means) >= 80 - 1 and max(means) <= 120 + 1
    assert max(means) - min(means) > 10
    # On float images the range is [0, 1].
    bright = Lighting(max_lighting=0.9, p=1.0)(torch.full((3, 4, 4), 0.9))
    assert bright.dtype == torch.float32 and float(bright.max()) <= 1.0
    assert torch.equal(Lighting(p=0.0)(image), image)


def test_lighting_draws_its_own_factors_for_each_image_of_a_batch() -> None:
    batch = torch.full((64, 3, 8, 8), 0.5)
    torch.manual_seed(0)
    out = Lighting(p=1.0)(batch)
    means = out.mean(dim=(1, 2, 3))
    assert float(means.min()) >= 0.4 - 1e-6 and float(means.max()) <= 0.6 + 1e-6
    assert len(set(means.tolist())) == 64
    # p: the share of images changed.
    torch.manual_seed(0)
    half = Lighting(p=0.5)(batch)
    unchanged = int((half.mean(dim=(1, 2, 3)) == 0.5).sum())
    assert 16 <= unchanged <= 48


def test_tv_tensor_images_stay_tv_tensor_images() -> None:
    image = tv_tensors.Image(torch.from_numpy(noise(40, 50)).permute(2, 0, 1))
    torch.manual_seed(0)
    warped = Warp(32)(image)
    lit = Lighting(p=1.0)(warped)
    assert isinstance(warped, tv_tensors.Image) and isinstance(lit, tv_tensors.Image)
    assert lit.shape == (3, 32, 32) and lit.dtype == torch.uint8


def test_normalise_batch_matches_predict() -> None:
    arrays = [noise(8, 8, seed) for seed in range(3)]
    batch = torch.stack([torch.from_numpy(a).permute(2, 0, 1) for a in arrays])
    out = normalise_batch(batch)
    for array, row in zip(arrays, out, strict=True):
        np.testing.assert_allclose(row.numpy(), normalise(array), atol=1e-5)
