"""Model versions over REST: side by side, in full, files, plots, Grad-CAM, predict."""

from __future__ import annotations

import base64
import io
import json
import os
import random
import xml.etree.ElementTree as ET
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from safetensors.torch import load
from sqlalchemy.orm import Session, sessionmaker

from api.main import create_app
from core.config import Settings
from core.db import transaction
from core.tables import Job, JobStatus, ProjectMember, Role
from core.users import create_user
from tests.workers.training.conftest import synth_jpeg
from workers.runner import JobContext
from workers.train import lr_find_job, train_job

# Real training runs, served processes: seconds each.
pytestmark = pytest.mark.slow

PARAMS = {"pretrained": False, "image_size": 32, "batch_size": 8, "epochs": 1, "lr": 5e-3}


def _client(settings: Settings, factory: sessionmaker[Session], project_id: int) -> TestClient:
    with transaction(factory) as s:
        user = create_user(s, "vic", "vic-password")
        s.add(ProjectMember(project_id=project_id, user_id=user.id, role=Role.viewer))
    client = TestClient(create_app(settings))
    login = client.post("/api/auth/login", json={"username": "vic", "password": "vic-password"})
    assert login.status_code == 200, login.text
    csrf = client.app.state.signer.csrf_token(client.cookies["winnow_session"])  # type: ignore[attr-defined]
    client.headers["X-CSRF-Token"] = csrf
    return client


def test_models_over_rest(
    images: Callable[..., list[int]],
    job_context: Callable[..., JobContext],
    factory: sessionmaker[Session],
    settings: Settings,
    project_id: int,
) -> None:
    images(per_class=12)
    first = train_job(job_context("train", PARAMS))["model_version_id"]
    second = train_job(job_context("train", {**PARAMS, "epochs": 2}))["model_version_id"]
    lr_ctx = job_context("lr_find", {"pretrained": False, "image_size": 32, "num_iter": 30})
    curve = lr_find_job(lr_ctx)
    with transaction(factory) as s:
        job = s.get(Job, lr_ctx.job_id)
        assert job is not None
        job.result, job.status = curve, JobStatus.succeeded
    client = _client(settings, factory, project_id)
    base = f"/api/projects/{project_id}/models"

    listed = client.get(base).json()
    assert [m["id"] for m in listed] == [second, first]
    assert [m["epochs_run"] for m in listed] == [3, 2]
    for row in listed:
        assert row["arch"] == "resnet18" and row["classes"] == ["grizzly", "black"]
        assert row["error_rate"] is not None and row["files"] == ["metadata", "onnx", "weights"]

    detail = client.get(f"{base}/{second}").json()
    assert [m["stage"] for m in detail["metrics"]] == ["frozen", "unfrozen", "unfrozen"]
    assert {a["code"] for a in detail["advice"]} >= {"not_enough_data"}
    assert detail["interpretation"]["confusion_matrix"]
    assert client.get(f"{base}/999").status_code == 404

    weights = client.get(f"{base}/{second}/files/weights")
    assert weights.status_code == 200
    assert "fc.weight" in load(weights.content)
    metadata = client.get(f"{base}/{second}/files/metadata").json()
    assert metadata["classes"] == ["grizzly", "black"]
    onnx = client.get(f"{base}/{second}/files/onnx")
    assert onnx.status_code == 200 and len(onnx.content) > 1000
    assert client.get(f"{base}/{second}/files/pickle").status_code == 422

    # The same model as a page: epochs, confusion matrix, top losses with their heatmaps.
    page = client.get(f"/projects/{project_id}/models/{second}")
    assert page.status_code == 200
    assert "Confusion matrix" in page.text and "grizzly" in page.text
    top = detail["interpretation"]["top_losses"][0]
    assert f"{base}/{second}/gradcam/{top['image_id']}.png" in page.text
    heat = client.get(f"{base}/{second}/gradcam/{top['image_id']}.png")
    assert heat.status_code == 200 and heat.content.startswith(b"\x89PNG")
    assert client.get(f"{base}/{second}/gradcam/123456.png").status_code == 404

    for url in (
        f"{base}/{second}/losses.svg",
        f"/api/projects/{project_id}/jobs/{lr_ctx.job_id}/lr_find.svg",
    ):
        plot = client.get(url)
        assert plot.status_code == 200 and plot.headers["content-type"].startswith("image/svg")
        ET.fromstring(plot.text)
    # The project page shows the newest sweep in place, with its suggestions.
    project_page = client.get(f"/projects/{project_id}").text
    assert f"/jobs/{lr_ctx.job_id}/lr_find.svg" in project_page and "Suggested:" in project_page

    rng = random.Random(5)
    upload = [("files", (f"{n}.jpg", synth_jpeg(n % 2, rng, 40), "image/jpeg")) for n in range(3)]
    predicted = client.post(f"{base}/{second}/predict", files=upload)
    assert predicted.status_code == 200, predicted.text
    body = predicted.json()
    assert body["model_version_id"] == second
    assert [p["filename"] for p in body["predictions"]] == ["0.jpg", "1.jpg", "2.jpg"]
    for p in body["predictions"]:
        assert p["label"] in ("grizzly", "black")
        assert abs(sum(p["probabilities"].values()) - 1) < 1e-4
        assert p["probability"] == max(p["probabilities"].values())
        assert p["top"][0]["label"] == p["label"] and len(p["top"]) == 2
        assert p["gradcam"] is None  # only when asked
    # The top classes, cut to top_k, and the heatmap of the predicted class as a JPEG.
    asked = client.post(f"{base}/{second}/predict?top_k=1&gradcam=true", files=upload[:1])
    (one,) = asked.json()["predictions"]
    assert one["top"] == [{"label": one["label"], "probability": one["probability"]}]
    assert one["gradcam"].startswith("data:image/jpeg;base64,")
    with Image.open(io.BytesIO(base64.b64decode(one["gradcam"].split(",", 1)[1]))) as heat:
        assert heat.format == "JPEG" and heat.size == (224, 224)
    broken = client.post(
        f"{base}/{second}/predict", files=[("files", ("x.jpg", b"nope", "image/jpeg"))]
    )
    assert broken.status_code == 422
    assert json.loads(broken.text)["detail"] == "x.jpg cannot be read: not an image"


def test_models_need_membership(
    factory: sessionmaker[Session], settings: Settings, project_id: int
) -> None:
    client = TestClient(create_app(settings))
    assert client.get(f"/api/projects/{project_id}/models").status_code == 401


def _png_of(width: int, height: int) -> bytes:
    """A valid greyscale PNG of width x height, written row by row: 170 megapixels
    compress to a few hundred kB without ever being in memory."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    packer = zlib.compressobj(9)
    row = b"\0" * (width + 1)  # filter byte 0, then black pixels
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_a_170_megapixel_png_is_refused_without_the_api_growing(
    images: Callable[..., list[int]],
    job_context: Callable[..., JobContext],
    factory: sessionmaker[Session],
    settings: Settings,
    project_id: int,
) -> None:
    images(per_class=6)
    model = train_job(job_context("train", PARAMS))["model_version_id"]
    client = _client(settings, factory, project_id)
    bomb = _png_of(13_040, 13_040)
    assert len(bomb) < 2_000_000
    url = f"/api/projects/{project_id}/models/{model}/predict"
    # One ordinary prediction first: ONNX Runtime and the model load once per process.
    normal = [("files", ("ok.jpg", synth_jpeg(0, random.Random(1), 40), "image/jpeg"))]
    assert client.post(url, files=normal).status_code == 200
    before = _rss_bytes()
    refused = client.post(
        url,
        files=[("files", ("huge.png", bomb, "image/png"))],
    )
    grown = _rss_bytes() - before
    assert refused.status_code == 422
    assert refused.json()["detail"] == "huge.png cannot be read: decompression bomb"
    # Decoded in this process it would take 170 MB (510 MB as RGB); the bound is 64 MB.
    assert grown < 64 * 1024**2, grown
