"""The augmentation as v2 transforms: the composed matrices land where each part says they do,
on PIL images and on tensors alike, and the pipeline gives what the model expects."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2

from api.predict import normalise
from workers.training.augment import Lighting, Warp, normalise_batch, train_transform

NOTHING: dict[str, Any] = {"min_scale": 1.0, "ratio": (1.0, 1.0), "p_affine": 0.0, "p_warp": 0.0}


def noise(height: int, width: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((height, width, 3)) * 255).astype(np.uint8)


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
    image = noise(60, 80, seed=1)
    # Smooth the noise so that the two bilinear samplers' rounding is all that differs.
    smooth = np.array(Image.fromarray(image).resize((20, 15)).resize((80, 60), Image.BILINEAR))
    transform = Warp(48)
    for seed in range(5):
        torch.manual_seed(seed)
        params = transform.make_params([Image.fromarray(smooth)])
        a = np.asarray(transform.transform(Image.fromarray(smooth), params)).astype(int)
        tensor = torch.from_numpy(smooth).permute(2, 0, 1).contiguous()
        b = np.asarray(transform.transform(tensor, params).permute(1, 2, 0)).astype(int)
        inner = (slice(4, -4), slice(4, -4))  # edges may differ by a pixel of black
        assert np.abs(a[inner] - b[inner]).mean() < 3


def test_the_same_seed_gives_the_same_augmentation() -> None:
    image = Image.fromarray(noise(48, 64))
    transform = train_transform(32)
    torch.manual_seed(3)
    first = [transform(image) for _ in range(5)]
    torch.manual_seed(3)
    again = [transform(image) for _ in range(5)]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(first[0], f) for f in first[1:])
    assert first[0].shape == (3, 32, 32) and first[0].dtype == torch.uint8


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
