"""Architectures, weights sources, layer groups and Grad-CAM on each architecture."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torchvision import models

from workers.training.fit import discriminative_lrs
from workers.training.interpret import gradcam
from workers.training.model import ARCHS, build_model, head, headless, layer_groups


@pytest.mark.parametrize("arch", ARCHS)
def test_each_architecture_has_a_new_head_and_three_groups(arch: str) -> None:
    built = build_model(arch, 3, pretrained=False)
    model = built.model.eval()
    assert head(model, arch).out_features == 3
    groups = layer_groups(model, arch)
    assert len(groups) == 3 and all(groups)
    ids = [id(p) for g in groups for p in g]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode(), headless(model, arch) as body:
        features = body(x)
    assert features.shape == (2, head(model, arch).in_features)
    heat = gradcam(model, arch, x[0], 1, torch.device("cpu"))
    assert heat.shape == (32, 32) and heat.min() >= 0 and heat.max() <= 1


def test_discriminative_lrs_are_the_lessons_slice() -> None:
    lrs = discriminative_lrs(1e-3, 3)
    assert lrs[0] == pytest.approx(1e-5) and lrs[-1] == pytest.approx(1e-3)
    assert lrs[1] == pytest.approx(1e-4)


def test_unavailable_weights_fall_back_fast_and_say_so(tmp_path: Path) -> None:
    start = time.monotonic()
    built = build_model("resnet18", 2, pretrained=True, weights_dir=tmp_path / "weights")
    assert time.monotonic() - start < 15
    assert built.weights == "random"
    assert "random initialisation" in built.note


def test_local_weights_file_loads_the_body(tmp_path: Path) -> None:
    # An ImageNet-shaped state dict (1000 classes): the body loads, the head is new.
    imagenet = models.resnet18(num_classes=1000)
    path = tmp_path / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in imagenet.state_dict().items()}, str(path))
    built = build_model("resnet18", 2, pretrained=True, weights_file=path)
    assert built.weights == "file:resnet18.safetensors"
    state = built.model.state_dict()
    assert torch.equal(state["conv1.weight"], imagenet.conv1.weight)
    assert state["fc.weight"].shape == (2, 512)
    pth = tmp_path / "resnet18.pth"
    torch.save(imagenet.state_dict(), pth)
    from_pth = build_model("resnet18", 2, True, weights_file=pth).model.state_dict()
    assert torch.equal(from_pth["layer4.0.conv1.weight"], imagenet.layer4[0].conv1.weight)
    with pytest.raises(ValueError, match="do not fit"):
        build_model("resnet34", 2, True, weights_file=path)


def test_a_job_reads_weights_only_from_its_own_project(tmp_path: Path) -> None:
    from core.store import LocalStore
    from core.weights import WeightsError, weights_key
    from workers.train import weights_path

    store = LocalStore(tmp_path / "data")
    mine = store.staging(weights_key(1, "body.safetensors"))
    save_file({"w": torch.zeros(1)}, str(mine))
    assert weights_path(store, 1, "body.safetensors") == mine
    # The same name in another project is that project's own, and absent there.
    with pytest.raises(WeightsError, match="no weights file"):
        weights_path(store, 2, "body.safetensors")
    for hostile in ("../1/weights/body.safetensors", "/etc/passwd", "models/3/weights.safetensors"):
        with pytest.raises(WeightsError, match="not a weights file name"):
            weights_path(store, 2, hostile)
