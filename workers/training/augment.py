"""fastai's ``aug_transforms`` defaults as one warp per image.

fastai composes its random crop, flip, rotation, zoom and perspective warp into a single
coordinate transform and resamples each image once. This does the same on the CPU: the
parts become 3x3 matrices that map output pixels to source pixels, their product goes to
one ``PIL.Image.transform(PERSPECTIVE)`` call, and brightness and contrast are a multiply
and an add on the result. Compared with a chain of torchvision transforms this resamples
once instead of three times (sharper images) and costs a fraction of the time, which on a
two-core machine is time the model does not get.

Out-of-frame areas after a rotation or warp are black, as with torchvision's defaults.
Random numbers come from torch's generator, so ``torch.manual_seed`` makes a run repeatable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image


@dataclass(frozen=True)
class Augment:
    size: int  # output side
    min_scale: float = 0.35  # smallest crop, as a share of the source's area
    ratio: tuple[float, float] = (3 / 4, 4 / 3)  # crop aspect range
    max_rotate: float = 10.0  # degrees
    max_zoom: float = 1.1
    max_warp: float = 0.2
    max_lighting: float = 0.2
    p_affine: float = 0.75  # rotation and zoom
    p_warp: float = 0.75
    p_lighting: float = 0.75

    def __call__(self, array: np.ndarray) -> np.ndarray:
        """HWC uint8 of any size -> augmented HWC uint8 of ``size`` x ``size``."""
        height, width = array.shape[:2]
        draw = torch.rand(16).tolist()
        matrix = (
            self._crop(width, height, draw[0:4])
            @ _flip(draw[4] < 0.5)
            @ self._affine(draw[5:8])
            @ self._warp(draw[8:13])
            @ _to_unit(self.size)
        )
        coeffs = (matrix / matrix[2, 2]).ravel()[:8]
        image = Image.fromarray(array).transform(
            (self.size, self.size),
            Image.Transform.PERSPECTIVE,
            tuple(float(c) for c in coeffs),
            Image.Resampling.BILINEAR,
        )
        out = np.asarray(image)
        if draw[13] < self.p_lighting:
            out = self._lighting(out, draw[14], draw[15])
        return out

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

    def _lighting(self, out: np.ndarray, u_brightness: float, u_contrast: float) -> np.ndarray:
        brightness = 1 + self.max_lighting * (2 * u_brightness - 1)
        contrast = 1 + self.max_lighting * (2 * u_contrast - 1)
        pixels = out.astype(np.float32)
        mean = float(pixels.mean())
        pixels = ((pixels - mean) * contrast + mean) * brightness
        return np.clip(pixels, 0, 255).astype(np.uint8)


def _to_unit(size: int) -> np.ndarray:
    """Output coordinates -> the unit square [-1, 1]^2. Pillow's coordinates are continuous
    (pixel i spans [i, i + 1)) and it samples at pixel centres itself."""
    return np.array([[2 / size, 0, -1], [0, 2 / size, -1], [0, 0, 1]], dtype=np.float64)


def _flip(flip: bool) -> np.ndarray:
    return np.diag([-1.0 if flip else 1.0, 1.0, 1.0])


def _homography(source: list[tuple[float, float]], target: list[tuple[float, float]]) -> np.ndarray:
    """The 3x3 projective map sending each source point to its target point."""
    rows, rhs = [], []
    for (x, y), (tx, ty) in zip(source, target, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -tx * x, -tx * y])
        rows.append([0, 0, 0, x, y, 1, -ty * x, -ty * y])
        rhs.extend([tx, ty])
    h = np.linalg.solve(np.array(rows, dtype=np.float64), np.array(rhs, dtype=np.float64))
    return np.append(h, 1.0).reshape(3, 3)
