"""The rank job: per-image loss in sample and out of fold, idempotent, mislabels on top."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker
from torchvision import models

from core.config import Settings
from core.db import transaction
from core.images import ImageFilter, list_images
from core.preprocess import prepare
from core.store import image_store
from core.tables import Image, ImageClass, ImageScore, ImageState, Job, ModelVersion, Project
from workers.rank import rank_job
from workers.runner import JobCancelled, JobContext
from workers.train import train_job

# Real training runs, served processes: seconds each.
pytestmark = pytest.mark.slow

# Four epochs: with two, 40 images from scratch left every loss near log 2 (0.67-0.81), and
# whether the planted mislabel made the top five was chance.
PARAMS = {"pretrained": False, "image_size": 32, "batch_size": 8, "epochs": 4, "lr": 5e-3}


def _scores(factory: sessionmaker[Session], method: str) -> list[ImageScore]:
    with transaction(factory) as s:
        return list(
            s.scalars(
                select(ImageScore)
                .where(ImageScore.method == method)
                .order_by(ImageScore.loss.desc())
            )
        )


def test_rank_in_sample_and_out_of_fold(
    images: Callable[..., list[int]],
    job_context: Callable[..., JobContext],
    factory: sessionmaker[Session],
    settings: Settings,
) -> None:
    ids = images(per_class=20)
    # One grizzly labelled black by mistake, and one image deleted by a reviewer.
    with transaction(factory) as s:
        black = s.scalar(select(ImageClass).where(ImageClass.name == "black"))
        assert black is not None
        wrong = s.get(Image, ids[3])
        assert wrong is not None
        wrong.label_id = black.id
        gone = s.get(Image, ids[-1])
        assert gone is not None
        gone.state = ImageState.deleted
    model_id = train_job(job_context("train", PARAMS))["model_version_id"]
    result = rank_job(job_context("rank", {"out_of_fold": True, "folds": 4}))
    assert result["model_version_id"] == model_id
    assert result["in_sample"] == result["out_of_fold"] == len(ids) - 1

    for method in ("in_sample", "out_of_fold"):
        rows = _scores(factory, method)
        assert len(rows) == len(ids) - 1
        assert ids[-1] not in {r.image_id for r in rows}
        for row in rows:
            assert row.loss >= 0 and 0 <= row.probability <= 1
            assert row.model_version_id == model_id
            assert row.label_id is not None and row.predicted_id is not None
        mislabel = next(r for r in rows if r.image_id == ids[3])
        assert mislabel.label_id == black.id
    # In sample is the loss of the label under the stored model, as plain torch computes it.
    with transaction(factory) as s:
        version = s.get(ModelVersion, model_id)
        assert version is not None
        weights = settings.data_dir / version.files["weights"]
        by_id = {i.id: i for i in s.scalars(select(Image).where(Image.id.in_(ids)))}
    model = models.get_model("resnet18", num_classes=2)
    model.load_state_dict(load_file(str(weights)))
    model.eval()
    store = image_store(settings)
    rows = _scores(factory, "in_sample")
    batch = torch.from_numpy(
        np.stack([prepare(store.read(by_id[r.image_id].sha256, "normal"), 32) for r in rows])
    )
    targets = torch.tensor([0 if r.label_id != black.id else 1 for r in rows])
    with torch.inference_mode():
        expected = F.cross_entropy(model(batch), targets, reduction="none")
    np.testing.assert_allclose([r.loss for r in rows], expected.numpy(), rtol=1e-4, atol=1e-5)

    # Near-duplicates by embedding are listed as review items, each pair once.
    pairs = {tuple(p["image_ids"]) for p in result["similar_pairs"]}
    assert len(pairs) == len(result["similar_pairs"])
    assert all(0 < p["similarity"] <= 1.0001 for p in result["similar_pairs"])
    # k-fold fine-tunes: no model scored an image whose label it trained on.
    assert result["method"] == "cross_validated"
    assert result["features_saw_labels"] is False
    # Every score sits beside the loss, from the same probabilities.
    for method in ("in_sample", "out_of_fold"):
        for row in _scores(factory, method):
            assert row.self_confidence is not None and row.margin is not None
            assert row.issue is not None
            np.testing.assert_allclose(row.self_confidence, np.exp(-row.loss), rtol=1e-6, atol=1e-9)
            assert 0 <= row.margin <= 1

    # The mislabelled image is among the few a reviewer sees first.
    top = [r.image_id for r in _scores(factory, "out_of_fold")[:5]]
    assert ids[3] in top
    # The review queue's stored order is the out-of-fold ranking, the worst first.
    with transaction(factory) as s:
        version = s.get(ModelVersion, model_id)
        project = s.get(Project, version.project_id) if version else None
        assert project is not None
        assert (project.review_model_id, project.review_method) == (model_id, "out_of_fold")
        _, page = list_images(s, project.id, ImageFilter(), sort="-loss", limit=5)
        assert [item.id for item in page] == top

    # The fast heads, without pretrained weights, learn on the trained body: said so.
    heads = rank_job(
        job_context("rank", {"out_of_fold": True, "out_of_fold_method": "frozen_heads", "folds": 4})
    )
    assert heads["features_saw_labels"] is True

    # Again: the ranking is replaced, not duplicated.
    rank_job(job_context("rank", {"model_version_id": model_id}))
    assert len(_scores(factory, "in_sample")) == len(ids) - 1
    assert len(_scores(factory, "out_of_fold")) == len(ids) - 1


def test_rank_needs_a_model(
    images: Callable[..., list[int]], job_context: Callable[..., JobContext]
) -> None:
    images(per_class=4)
    with pytest.raises(ValueError, match="train one first"):
        rank_job(job_context("rank", {}))
    with pytest.raises(ValueError, match="train one first"):
        rank_job(job_context("rank", {"model_version_id": 999}))


def test_cross_validated_ranking_is_cancelled_within_a_fold(
    images: Callable[..., list[int]],
    job_context: Callable[..., JobContext],
    factory: sessionmaker[Session],
) -> None:
    images(per_class=12)
    train_job(job_context("train", PARAMS))
    ctx = job_context("rank", {"out_of_fold": True, "folds": 3})
    ctx.report_interval = 0.0
    messages: list[str] = []
    report = ctx.report

    def cancelling(done: int, total: int, message: str = "", force: bool = False) -> None:
        messages.append(message)
        if message == "round 1, fold 2/3: training" and done == 1:
            with transaction(factory) as s:
                s.execute(update(Job).where(Job.id == ctx.job_id).values(cancel_requested=True))
        report(done, total, message, force)

    ctx.report = cancelling  # type: ignore[method-assign]
    with pytest.raises(JobCancelled):
        rank_job(ctx)
    # Progress went fold by fold, and the cancel stopped the second fold at its next batch.
    assert "round 1, fold 1/3: scoring the held-out fold" in messages
    assert messages[-1] == "round 1, fold 2/3: training"
    assert not any("fold 3/3" in m or m.startswith("round 2") for m in messages)
    # Nothing half-done is stored as an out-of-fold ranking.
    assert _scores(factory, "out_of_fold") == []
