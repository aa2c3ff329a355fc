"""Heatmaps over images, in numpy and Pillow: the training job's top-loss Grad-CAM pictures
and the predict endpoint's, from the ``cam`` output of the ONNX export, look alike."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def heat_colours(heat: np.ndarray) -> np.ndarray:
    """A blue-to-red colour ramp (like matplotlib's jet) without matplotlib: HxW in [0, 1]
    to HxWx3 uint8."""
    r = np.clip(1.5 - np.abs(4 * heat - 3), 0, 1)
    g = np.clip(1.5 - np.abs(4 * heat - 2), 0, 1)
    b = np.clip(1.5 - np.abs(4 * heat - 1), 0, 1)
    return (np.stack([r, g, b], axis=-1) * 255).astype(np.uint8)


def blend(rgb: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """The image with the heatmap (same height and width, in [0, 1]) laid over it."""
    mixed = 0.55 * rgb.astype(np.float32) + 0.45 * heat_colours(heat).astype(np.float32)
    return mixed.clip(0, 255).astype(np.uint8)


def cam_heat(cam: np.ndarray, height: int, width: int) -> np.ndarray:
    """A class activation map (h x w, any scale, before its ReLU) as a heatmap of the given
    size in [0, 1]: positive part, bilinear resize, divided by its peak."""
    positive = np.maximum(cam.astype(np.float32), 0)
    resized = Image.fromarray(positive).resize((width, height), Image.Resampling.BILINEAR)
    heat = np.asarray(resized, dtype=np.float32)
    peak = float(heat.max())
    return heat / peak if peak > 0 else np.zeros((height, width), np.float32)


def overlay_jpeg(rgb: np.ndarray, cam: np.ndarray, quality: int = 85) -> bytes:
    """The image (HxWx3 uint8) with the map of ``cam`` over it, as JPEG bytes."""
    heat = cam_heat(cam, rgb.shape[0], rgb.shape[1])
    out = io.BytesIO()
    Image.fromarray(blend(rgb, heat)).save(out, format="JPEG", quality=quality)
    return out.getvalue()
