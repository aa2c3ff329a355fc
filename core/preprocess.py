"""The validation transform, in PIL and numpy: what the model sees at validation and predict.

The API must not import torch, so the preprocessing lives here and the training code imports
it for its validation transform: what the model saw while it was validated is exactly what it
sees when the predictor serves it.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def decode_rgb(source: bytes | Path, short_side: int) -> np.ndarray:
    """Decode an image and resize it so that its shorter side is ``short_side`` (HWC uint8)."""
    with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as opened:
        # draft() lets libjpeg decode at 1/2, 1/4 or 1/8 scale when the target is small.
        opened.draft("RGB", (short_side, short_side))
        image = ImageOps.exif_transpose(opened).convert("RGB")
    return np.array(resize_short(image, short_side), dtype=np.uint8)


def resize_short(image: Image.Image, short_side: int) -> Image.Image:
    width, height = image.size
    scale = short_side / min(width, height)
    size = (max(short_side, round(width * scale)), max(short_side, round(height * scale)))
    return image if size == image.size else image.resize(size, Image.Resampling.BILINEAR)


def center_crop(array: np.ndarray, size: int) -> np.ndarray:
    height, width = array.shape[:2]
    top, left = (height - size) // 2, (width - size) // 2
    return array[top : top + size, left : left + size]


def normalise(
    array: np.ndarray,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
) -> np.ndarray:
    """HWC uint8 -> CHW float32 with the ImageNet statistics."""
    scaled = array.astype(np.float32) / np.float32(255.0)
    centred = (scaled - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(centred.transpose(2, 0, 1), dtype=np.float32)


def prepare(source: bytes | Path, size: int) -> np.ndarray:
    """The validation transform: shorter side to ``size``, centre crop, normalise."""
    return normalise(center_crop(decode_rgb(source, size), size))
