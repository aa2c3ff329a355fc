"""Export: safetensors + metadata + ONNX, reloaded in plain torchvision and in ONNX Runtime."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from safetensors.torch import load_file
from sqlalchemy.orm import Session, sessionmaker
from torchvision import models

from core.config import Settings
from core.db import transaction
from core.predictor import load_predictor
from core.preprocess import prepare
from core.store import image_store
from core.tables import ModelVersion
from workers.runner import JobContext
from workers.train import train_job
from workers.training.cam import WithCam
from workers.training.data import labelled_images, load_split

# Real training runs, served processes: seconds each.
pytestmark = pytest.mark.slow

PARAMS = {"pretrained": False, "image_size": 32, "batch_size": 8, "epochs": 1, "lr": 5e-3}


def test_export_reloads_with_the_same_predictions(
    images: Callable[..., list[int]],
    job_context: Callable[..., JobContext],
    factory: sessionmaker[Session],
    settings: Settings,
    project_id: int,
) -> None:
    images(per_class=12)
    result = train_job(job_context("train", PARAMS))
    with transaction(factory) as s:
        version = s.get(ModelVersion, result["model_version_id"])
        assert version is not None
        files = {k: settings.data_dir / v for k, v in version.files.items()}
        assert all(v.startswith(f"models/{version.id}/") for v in version.files.values())
        rows = labelled_images(s, project_id)
    split = load_split(rows, image_store(settings), 0.2, 42)
    metadata = json.loads(files["metadata"].read_text())
    assert metadata["arch"] == "resnet18"
    assert metadata["classes"] == ["grizzly", "black"]
    assert metadata["image_size"] == 32
    assert metadata["normalize"]["mean"] == [0.485, 0.456, 0.406]
    assert metadata["data_version"] == split.version
    assert metadata["metrics"]["error_rate"] == result["error_rate"]

    # Plain torchvision, nothing of Winnow's: the state dict fits the stock architecture.
    model = models.get_model("resnet18", num_classes=2)
    model.load_state_dict(load_file(str(files["weights"])))
    model.eval()
    blobs = [s.path.read_bytes() for s in split.valid + split.train[:4]]
    batch = np.stack([prepare(b, 32) for b in blobs])
    with torch.inference_mode():
        torch_logits = model(torch.from_numpy(batch)).numpy()

    with torch.inference_mode():
        _, torch_cam = WithCam(model, "resnet18")(torch.from_numpy(batch))

    session = ort.InferenceSession(str(files["onnx"]), providers=["CPUExecutionProvider"])
    onnx_logits, onnx_cam = session.run(["logits", "cam"], {"image": batch})
    np.testing.assert_allclose(onnx_logits, torch_logits, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(onnx_cam, torch_cam.numpy(), rtol=1e-3, atol=1e-3)
    assert onnx_cam.shape == (len(batch), 2, 1, 1)  # resnet's last block at 32 px: 1x1
    # A batch of one works too: the batch dimension is dynamic.
    (single,) = session.run(["logits"], {"image": batch[:1]})
    np.testing.assert_allclose(single, torch_logits[:1], rtol=1e-4, atol=1e-4)

    predictor = load_predictor(files["onnx"], files["metadata"])
    assert load_predictor(files["onnx"], files["metadata"]) is predictor
    predictions = predictor.predict(blobs)
    expected = torch.from_numpy(torch_logits).softmax(1).numpy()
    for prediction, probs in zip(predictions, expected, strict=True):
        assert prediction.label == metadata["classes"][int(probs.argmax())]
        assert abs(prediction.probability - float(probs.max())) < 1e-4
        assert abs(sum(prediction.probabilities.values()) - 1) < 1e-5
        assert prediction.ranked[0] == (prediction.label, prediction.probability)
        assert prediction.heatmap is None
    with_heat = predictor.predict(blobs[:2], heatmaps=True)
    assert [p.label for p in with_heat] == [p.label for p in predictions[:2]]
    assert all(p.heatmap and p.heatmap.startswith(b"\xff\xd8") for p in with_heat)


def test_gradcam_heatmaps_are_images(
    images: Callable[..., list[int]],
    job_context: Callable[..., JobContext],
    factory: sessionmaker[Session],
    settings: Settings,
) -> None:
    from PIL import Image

    images(per_class=10)
    result = train_job(job_context("train", PARAMS))
    with transaction(factory) as s:
        version = s.get(ModelVersion, result["model_version_id"])
        assert version is not None and version.interpretation is not None
        top = version.interpretation["top_losses"]
    assert top
    for row in top:
        path: Path = settings.data_dir / row["gradcam"]
        with Image.open(path) as heat:
            assert heat.format == "PNG" and heat.size == (32, 32)
