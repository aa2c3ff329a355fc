"""Predictions with an exported model, in the API process, through ONNX Runtime.

The images go through core.preprocess, the same transform as validation during training.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from core.decode import DecodeLimits, Rejected, decode
from core.isolation import DecoderPool
from core.preprocess import IMAGENET_MEAN, IMAGENET_STD, center_crop, normalise, resize_short


class UnreadableImage(ValueError):
    def __init__(self, index: int, reason: str) -> None:
        super().__init__(f"image {index + 1} cannot be read: {reason}")
        self.index, self.reason = index, reason


def prepare_untrusted(
    item: tuple[int, bytes],
    size: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    limits: DecodeLimits,
) -> np.ndarray | str:
    """In a decoder child: the verify decode (normalised to limits.normal_max_side, as the
    training copies are), then the validation transform; the reason if it is refused."""
    try:
        decoded = decode(item[1], limits)
    except Rejected as refused:
        return refused.reason.value
    array = np.array(resize_short(decoded.image, size), dtype=np.uint8)
    return normalise(center_crop(array, size), mean, std)


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

    def predict(self, images: list[bytes], limits: DecodeLimits | None = None) -> list[Prediction]:
        """Predictions for untrusted image bytes. They are decoded in the isolated decoder
        children, as verification decodes (format allowlist, pixel cap, memory and CPU
        limits): a hostile upload costs a child, never the API process. Raises
        UnreadableImage naming the first file refused and why."""
        limits = limits or DecodeLimits()
        task = partial(
            prepare_untrusted, size=self.image_size, mean=self.mean, std=self.std, limits=limits
        )
        arrays: dict[int, np.ndarray] = {}
        with DecoderPool(task, min(len(images), 2), limits) as pool:
            for outcome in pool.imap_unordered(list(enumerate(images))):
                index, result = outcome.item[0], outcome.result
                if isinstance(result, str) or result is None:
                    # Refused by decode, or the child died (memory, CPU time): its reason.
                    failure = outcome.failure.value if outcome.failure else str(outcome.error)
                    raise UnreadableImage(index, result or failure)
                arrays[index] = result
        return self.predict_arrays([arrays[i] for i in range(len(images))])

    def predict_arrays(self, arrays: list[np.ndarray]) -> list[Prediction]:
        probs = softmax(self.logits(np.stack(arrays)))
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
