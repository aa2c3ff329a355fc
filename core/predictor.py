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
from core.heatmap import overlay_jpeg
from core.isolation import DecoderPool
from core.preprocess import IMAGENET_MEAN, IMAGENET_STD, center_crop, normalise, resize_short

# The side of the picture a heatmap is laid over: larger than small models' inputs, so
# that a person can see what is marked.
HEATMAP_SIDE = 224


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
    display: int = 0,
) -> tuple[np.ndarray, np.ndarray | None] | str:
    """In a decoder child: the verify decode (normalised to limits.normal_max_side, as the
    training copies are), then the validation transform; the reason if it is refused.
    With ``display``, also the same centre crop at that size in RGB, for a heatmap."""
    try:
        decoded = decode(item[1], limits)
    except Rejected as refused:
        return refused.reason.value
    array = np.array(resize_short(decoded.image, size), dtype=np.uint8)
    picture = None
    if display:
        shown = np.array(resize_short(decoded.image, display), dtype=np.uint8)
        picture = center_crop(shown, display)
    return normalise(center_crop(array, size), mean, std), picture


@dataclass(frozen=True)
class Prediction:
    label: str
    probability: float
    probabilities: dict[str, float]
    # The classes by probability, most likely first.
    ranked: list[tuple[str, float]]
    # The image with the predicted class's Grad-CAM over it (JPEG), when asked and the
    # export has the ``cam`` output (workers/training/cam.py).
    heatmap: bytes | None = None


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
        outputs = [o.name for o in self.session.get_outputs()]
        # Exports from before heatmaps were part of the export have the logits alone.
        self.has_cam = "cam" in outputs
        self.logits_name = "logits" if "logits" in outputs else outputs[0]
        self.classes: list[str] = list(metadata["classes"])
        self.image_size = int(metadata["image_size"])
        self.mean = tuple(metadata.get("normalize", {}).get("mean", IMAGENET_MEAN))
        self.std = tuple(metadata.get("normalize", {}).get("std", IMAGENET_STD))

    def run(self, batch: np.ndarray, cam: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """Logits, and the class activation maps when asked (and exported)."""
        names = [self.logits_name, "cam"] if cam and self.has_cam else [self.logits_name]
        outputs = self.session.run(names, {self.input_name: batch.astype(np.float32)})
        return np.asarray(outputs[0]), np.asarray(outputs[1]) if len(outputs) > 1 else None

    def predict(
        self, images: list[bytes], limits: DecodeLimits | None = None, heatmaps: bool = False
    ) -> list[Prediction]:
        """Predictions for untrusted image bytes. They are decoded in the isolated decoder
        children, as verification decodes (format allowlist, pixel cap, memory and CPU
        limits): a hostile upload costs a child, never the API process. Raises
        UnreadableImage naming the first file refused and why."""
        limits = limits or DecodeLimits()
        heatmaps = heatmaps and self.has_cam
        task = partial(
            prepare_untrusted,
            size=self.image_size,
            mean=self.mean,
            std=self.std,
            limits=limits,
            display=HEATMAP_SIDE if heatmaps else 0,
        )
        arrays: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}
        with DecoderPool(task, min(len(images), 2), limits) as pool:
            for outcome in pool.imap_unordered(list(enumerate(images))):
                index, result = outcome.item[0], outcome.result
                if isinstance(result, str) or result is None:
                    # Refused by decode, or the child died (memory, CPU time): its reason.
                    failure = outcome.failure.value if outcome.failure else str(outcome.error)
                    raise UnreadableImage(index, result or failure)
                arrays[index] = result
        ordered = [arrays[i] for i in range(len(images))]
        return self.predict_arrays(
            [a for a, _ in ordered], [p for _, p in ordered] if heatmaps else None
        )

    def predict_arrays(
        self, arrays: list[np.ndarray], pictures: list[np.ndarray | None] | None = None
    ) -> list[Prediction]:
        """Predictions for prepared arrays; with ``pictures`` (the same crops in RGB), each
        with its heatmap of the predicted class."""
        logits, cams = self.run(np.stack(arrays), cam=pictures is not None)
        probs = softmax(logits)
        results = []
        for n, row in enumerate(probs):
            best = int(row.argmax())
            order = np.argsort(-row, kind="stable")
            picture = pictures[n] if pictures is not None else None
            heat = None
            if cams is not None and picture is not None:
                heat = overlay_jpeg(picture, cams[n, best])
            results.append(
                Prediction(
                    label=self.classes[best],
                    probability=float(row[best]),
                    probabilities={c: float(p) for c, p in zip(self.classes, row, strict=True)},
                    ranked=[(self.classes[i], float(row[i])) for i in order],
                    heatmap=heat,
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
