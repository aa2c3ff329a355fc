"""The one-warp augmentation: the composed matrices land where each part says they do."""

from __future__ import annotations

import numpy as np
import torch

from workers.training.augment import Augment

NOTHING = {"min_scale": 1.0, "ratio": (1.0, 1.0), "p_affine": 0.0, "p_warp": 0.0, "p_lighting": 0}


def noise(height: int, width: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((height, width, 3)) * 255).astype(np.uint8)


def test_with_every_part_off_it_returns_the_image_or_its_mirror() -> None:
    image = noise(32, 32)
    augment = Augment(32, **NOTHING)  # type: ignore[arg-type]
    torch.manual_seed(0)
    outputs = [augment(image) for _ in range(20)]
    plain = sum(np.array_equal(o, image) for o in outputs)
    mirrored = sum(np.array_equal(o, image[:, ::-1]) for o in outputs)
    assert plain + mirrored == 20 and plain and mirrored


def test_a_full_crop_of_a_larger_image_is_a_resize() -> None:
    image = np.zeros((80, 80, 3), np.uint8)
    image[:40] = 255  # top half white
    out = Augment(40, **NOTHING)(image)  # type: ignore[arg-type]
    assert out.shape == (40, 40, 3)
    assert (out[:19] == 255).all() and (out[21:] == 0).all()


def test_the_same_seed_gives_the_same_augmentation() -> None:
    image = noise(48, 64)
    augment = Augment(32)
    torch.manual_seed(3)
    first = [augment(image) for _ in range(5)]
    torch.manual_seed(3)
    again = [augment(image) for _ in range(5)]
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(first[0], f) for f in first[1:])


def test_rotation_and_zoom_keep_the_centre() -> None:
    image = np.zeros((64, 64, 3), np.uint8)
    image[28:36, 28:36] = 255  # a white square in the middle
    augment = Augment(64, min_scale=1.0, ratio=(1.0, 1.0), p_affine=1.0, p_warp=0.0, p_lighting=0)
    torch.manual_seed(0)
    for _ in range(10):
        out = augment(image)
        assert (out[31:33, 31:33] > 200).all()
        # Nothing but the square is white: rotation by at most 10 degrees, zoom at most 1.1.
        assert (out[:20] == 0).all() and (out[44:] == 0).all()


def test_lighting_changes_brightness_within_its_range() -> None:
    image = np.full((16, 16, 3), 100, np.uint8)
    augment = Augment(16, min_scale=1.0, ratio=(1.0, 1.0), p_affine=0, p_warp=0, p_lighting=1.0)
    torch.manual_seed(0)
    means = [float(augment(image).mean()) for _ in range(50)]
    assert min(means) >= 80 - 1 and max(means) <= 120 + 1
    assert max(means) - min(means) > 10
