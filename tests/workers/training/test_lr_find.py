"""The LR finder: an exponential sweep that stops on divergence, a curve, suggestions, a plot."""

from __future__ import annotations

import itertools
import math
import xml.etree.ElementTree as ET
from collections.abc import Callable

from core.plots import lr_find_svg
from workers.runner import JobContext
from workers.train import lr_find_job
from workers.training.fit import Progress
from workers.training.lr_find import sweep


def test_sweep_on_a_known_curve_stops_when_the_loss_diverges() -> None:
    seen: list[float] = []

    def step(lr: float) -> float:
        # Falls until 1e-2, then rises steeply: the shape of a real LR finder curve.
        seen.append(lr)
        x = math.log10(lr)
        return 2.0 - 0.3 * (x + 7) if x < -2 else 0.5 + 3.0 * (x + 2) ** 2

    curve = sweep(step, 1e-7, 10.0, 100, Progress(100, lambda *_: None))
    assert curve.stopped_early and len(curve.lrs) < 100
    assert all(b > a for a, b in itertools.pairwise(seen))
    assert math.isclose(seen[0], 1e-7)
    assert 1e-5 < curve.suggestions["valley"] < 1e-2
    assert 1e-7 < curve.suggestions["steep"] < 1e-1
    assert len(curve.losses) == len(curve.lrs) == len(curve.raw_losses)


def test_lr_find_job_returns_curve_and_suggestions(
    images: Callable[..., list[int]], job_context: Callable[..., JobContext]
) -> None:
    images(per_class=16)
    params = {"pretrained": False, "image_size": 32, "batch_size": 8, "num_iter": 60}
    result = lr_find_job(job_context("lr_find", params))
    lrs, losses = result["lrs"], result["losses"]
    assert 5 < len(lrs) <= 60 and len(losses) == len(lrs)
    assert lrs == sorted(lrs) and math.isclose(lrs[0], 1e-7)
    assert all(math.isfinite(v) for v in losses)
    for name in ("valley", "steep"):
        assert 1e-7 <= result["suggestions"][name] <= 10
    assert result["weights"] == "random"
    svg = lr_find_svg(lrs, losses, result["suggestions"])
    root = ET.fromstring(svg)
    assert root.tag.endswith("svg")
    assert "valley" in svg and "<polyline" in svg
