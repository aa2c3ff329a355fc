"""Predictions with an exported model, in the API process, through ONNX Runtime.

The images go through core.preprocess, the same transform as validation during training.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.preprocess import IMAGENET_MEAN, IMAGENET_STD, center_crop, decode_rgb, normalise


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
