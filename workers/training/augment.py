"""fastai's ``aug_transforms`` defaults as torchvision.transforms.v2 transforms.

fastai composes its random crop, flip, rotation, zoom and perspective warp into a single
coordinate transform and resamples each image once. ``Warp`` does the same as one v2
transform: the parts become 3x3 matrices that map output pixels to source pixels and their
product is applied in one perspective resample (Pillow's for PIL images, torchvision's
``perspective`` kernel for tensors). A chain of separate v2 transforms (RandomResizedCrop,
RandomHorizontalFlip, RandomAffine, RandomPerspective) would resample three times, which
blurs small images and costs about three times as much: on a two-core machine, time the
model does not get. ``Lighting`` is fastai's brightness and contrast change.

``train_transform`` is the per-image part of the training pipeline: Warp, to a uint8
tensor, Lighting. ``normalise_batch`` (to float, ImageNet normalisation) runs on whole
batches where the model runs, as fastai's batch transforms do.

Out-of-frame areas after a rotation or warp are black, as with torchvision's defaults.
Random numbers come from torch's generator, so ``torch.manual_seed`` makes a run repeatable.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from api.predict import IMAGENET_MEAN, IMAGENET_STD


class Warp(v2.Transform):
    """Random resized crop to ``size`` x ``size``, flip, rotation, zoom and perspective warp,
    resampled once (bilinear)."""

    def __init__(
        self,
        size: int,
        min_scale: float = 0.35,  # smallest crop, as a share of the source's area
        ratio: tuple[float, float] = (3 / 4, 4 / 3),  # crop aspect range
        max_rotate: float = 10.0,  # degrees
        max_zoom: float = 1.1,
        max_warp: float = 0.2,
        p_flip: float = 0.5,
        p_affine: float = 0.75,  # rotation and zoom
        p_warp: float = 0.75,
    ) -> None:
        super().__init__()
        self.size = size
        self.min_scale, self.ratio = min_scale, ratio
        self.max_rotate, self.max_zoom, self.max_warp = max_rotate, max_zoom, max_warp
        self.p_flip, self.p_affine, self.p_warp = p_flip, p_affine, p_warp

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = _size_of(flat_inputs)
        draw = torch.rand(13).tolist()
        matrix = (
            self._crop(width, height, draw[0:4])
            @ np.diag([-1.0 if draw[4] < self.p_flip else 1.0, 1.0, 1.0])
            @ self._affine(draw[5:8])
            @ self._warp(draw[8:13])
            @ _to_unit(self.size)
        )
        return {"coefficients": [float(c) for c in (matrix / matrix[2, 2]).ravel()[:8]]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        coefficients = params["coefficients"]
        if isinstance(inpt, Image.Image):
            return inpt.transform(
                (self.size, self.size),
                Image.Transform.PERSPECTIVE,
                tuple(coefficients),
                Image.Resampling.BILINEAR,
            )
        # torchvision's kernel keeps the input's size: warp onto a canvas at least as large
        # as the output (the extra rows and columns are never sampled), then cut it out.
        height, width = inpt.shape[-2:]
        pad_right, pad_bottom = max(0, self.size - width), max(0, self.size - height)
        canvas = TF.pad(inpt, [0, 0, pad_right, pad_bottom]) if pad_right or pad_bottom else inpt
        warped = TF.perspective(canvas, None, None, coefficients=coefficients)
        return TF.crop(warped, 0, 0, self.size, self.size)

    def _crop(self, width: int, height: int, u: list[float]) -> np.ndarray:
        """torchvision's RandomResizedCrop sampling: a share of the area, an aspect ratio."""
        area = width * height * (self.min_scale + (1 - self.min_scale) * u[0])
        lo, hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        aspect = math.exp(lo + (hi - lo) * u[1])
        w = min(float(width), math.sqrt(area * aspect))
        h = min(float(height), math.sqrt(area / aspect))
        left = (width - w) * u[2]
        top = (height - h) * u[3]
        # Unit square [-1, 1]^2 -> the crop, in source pixel coordinates.
        return np.array(
            [[w / 2, 0, left + w / 2], [0, h / 2, top + h / 2], [0, 0, 1]], dtype=np.float64
        )

    def _affine(self, u: list[float]) -> np.ndarray:
        if u[0] >= self.p_affine:
            return np.eye(3)
        angle = math.radians(self.max_rotate * (2 * u[1] - 1))
        zoom = 1 + (self.max_zoom - 1) * u[2]
        # Zooming in shows a smaller part of the crop: scale the sampling points down.
        c, s = math.cos(angle) / zoom, math.sin(angle) / zoom
        return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=np.float64)

    def _warp(self, u: list[float]) -> np.ndarray:
        """A perspective tilt: the unit square's corners moved by up to ``max_warp``."""
        if u[0] >= self.p_warp:
            return np.eye(3)
        mx = self.max_warp * (2 * u[1] - 1)
        my = self.max_warp * (2 * u[2] - 1)
        # fastai's warp: one edge shrinks while the opposite one grows, per axis.
        source = [(-1.0, -1.0), (1.0, -1.0), (1.0, 1.0), (-1.0, 1.0)]
        target = [(x * (1 + mx * y), y * (1 + my * x)) for x, y in source]
        return _homography(source, target)


class Lighting(v2.Transform):
    """fastai's lighting: brightness and contrast, each by a factor in [1 - max, 1 + max].

    Contrast scales the distance from the image's mean, brightness scales the result; on
    uint8 the values are clamped to 0-255, on float to 0-1. Tensor images only (place it
    after ``v2.PILToTensor``).
    """

    _transformed_types = (torch.Tensor,)

    def __init__(self, max_lighting: float = 0.2, p: float = 0.75) -> None:
        super().__init__()
        self.max_lighting, self.p = max_lighting, p

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        apply, u_brightness, u_contrast = torch.rand(3).tolist()
        spread = self.max_lighting
        return {
            "apply": apply < self.p,
            "brightness": 1 + spread * (2 * u_brightness - 1),
            "contrast": 1 + spread * (2 * u_contrast - 1),
        }

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not params["apply"]:
            return inpt
        pixels = inpt.float()
        mean = pixels.mean()
        pixels = ((pixels - mean) * params["contrast"] + mean) * params["brightness"]
        if inpt.is_floating_point():
            out = pixels.clamp_(0, 1).to(inpt.dtype)
        else:
            out = pixels.clamp_(0, 255).round_().to(inpt.dtype)
        # A tv_tensors.Image stays one, as with torchvision's own transforms.
        return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.TVTensor) else out


def train_transform(size: int) -> v2.Compose:
    """PIL image of any size -> augmented CHW uint8 tensor of ``size`` x ``size``."""
    return v2.Compose([Warp(size), v2.PILToTensor(), Lighting()])


def normalise_batch(batch: torch.Tensor) -> torch.Tensor:
    """uint8 images (N, C, H, W) -> float32 scaled to [0, 1], ImageNet-normalised: the same
    numbers as api.predict's transform."""
    scaled = TF.to_dtype(batch, torch.float32, scale=True)
    return TF.normalize(scaled, list(IMAGENET_MEAN), list(IMAGENET_STD), inplace=True)


def _size_of(flat_inputs: list[Any]) -> tuple[int, int]:
    for inpt in flat_inputs:
        if isinstance(inpt, Image.Image | torch.Tensor):
            height, width = TF.get_size(inpt)
            return height, width
    raise TypeError("Warp needs an image (PIL image or tensor)")


def _to_unit(size: int) -> np.ndarray:
    """Output coordinates -> the unit square [-1, 1]^2. Pillow's coordinates are continuous
    (pixel i spans [i, i + 1)) and it samples at pixel centres itself."""
    return np.array([[2 / size, 0, -1], [0, 2 / size, -1], [0, 0, 1]], dtype=np.float64)


def _homography(source: list[tuple[float, float]], target: list[tuple[float, float]]) -> np.ndarray:
    """The 3x3 projective map sending each source point to its target point."""
    rows, rhs = [], []
    for (x, y), (tx, ty) in zip(source, target, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -tx * x, -tx * y])
        rows.append([0, 0, 0, x, y, 1, -ty * x, -ty * y])
        rhs.extend([tx, ty])
    h = np.linalg.solve(np.array(rows, dtype=np.float64), np.array(rhs, dtype=np.float64))
    return np.append(h, 1.0).reshape(3, 3)
