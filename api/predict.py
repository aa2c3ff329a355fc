"""Predictions with an exported model, in the API process, through ONNX Runtime.

The API must not import torch, so the preprocessing lives here in PIL and numpy, and the
training code imports it for its validation transform: what the model saw while it was
validated is exactly what it sees here.
"""

from __future__ import annotations

import io
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


@dataclass(frozen=True)
class Prediction:
    label: str
    probability: float
    probabilities: dict[str, float]


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    result: np.ndarray = exp / exp.sum(axis=1, keepdims=True)
    return result


class Predictor:
    """One ONNX Runtime session and the metadata written next to it by the export."""

    def __init__(self, onnx_path: Path, metadata: dict[str, Any]) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        # The API serves many requests; one inference must not take every core.
        options.intra_op_num_threads = 2
        self.session = ort.InferenceSession(
            str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name
        self.classes: list[str] = list(metadata["classes"])
        self.image_size = int(metadata["image_size"])
        self.mean = tuple(metadata.get("normalize", {}).get("mean", IMAGENET_MEAN))
        self.std = tuple(metadata.get("normalize", {}).get("std", IMAGENET_STD))

    def logits(self, batch: np.ndarray) -> np.ndarray:
        (output,) = self.session.run(None, {self.input_name: batch.astype(np.float32)})
        return np.asarray(output)

    def predict(self, images: list[bytes]) -> list[Prediction]:
        size = self.image_size
        batch = np.stack(
            [
                normalise(center_crop(decode_rgb(data, size), size), self.mean, self.std)
                for data in images
            ]
        )
        probs = softmax(self.logits(batch))
        results = []
        for row in probs:
            best = int(row.argmax())
            results.append(
                Prediction(
                    label=self.classes[best],
                    probability=float(row[best]),
                    probabilities={c: float(p) for c, p in zip(self.classes, row, strict=True)},
                )
            )
        return results


_cache: dict[tuple[str, float], Predictor] = {}
_lock = threading.Lock()


def load_predictor(onnx_path: Path, metadata_path: Path) -> Predictor:
    """A cached predictor; a new export at the same path (new mtime) replaces the old one."""
    key = (str(onnx_path), onnx_path.stat().st_mtime)
    with _lock:
        predictor = _cache.get(key)
        if predictor is None:
            metadata = json.loads(metadata_path.read_text())
            predictor = Predictor(onnx_path, metadata)
            # Few models are live at once; keep the newest handful.
            while len(_cache) >= 8:
                _cache.pop(next(iter(_cache)))
            _cache[key] = predictor
        return predictor
