"""Models: a torchvision architecture with a new head, its weights and its layer groups.

The model stays a plain torchvision model built with ``num_classes`` = the project's classes,
so an exported state dict loads into ``torchvision.models.get_model(arch, num_classes=n)``
with nothing of Winnow's.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn
from torchvision import models

ARCHS = ("resnet18", "resnet34", "resnet50", "convnext_tiny", "efficientnet_b0")
# A silent network must not hang a job: give the weights download this long per read.
DOWNLOAD_TIMEOUT = 20.0


@dataclass
class BuiltModel:
    model: nn.Module
    arch: str
    # "torchvision:<weights name>", "file:<path>" or "random".
    weights: str
    note: str


def child(model: nn.Module, name: str) -> nn.Module:
    module = getattr(model, name)
    assert isinstance(module, nn.Module)
    return module


def sequential(model: nn.Module, name: str) -> nn.Sequential:
    module = child(model, name)
    assert isinstance(module, nn.Sequential)
    return module


def head(model: nn.Module, arch: str) -> nn.Linear:
    """The final Linear layer: the only part trained while the body is frozen."""
    is_resnet = arch.startswith("resnet")
    layer = child(model, "fc") if is_resnet else sequential(model, "classifier")[-1]
    assert isinstance(layer, nn.Linear)
    return layer


def set_head(model: nn.Module, arch: str, layer: nn.Module) -> None:
    if arch.startswith("resnet"):
        model.fc = layer
    else:
        sequential(model, "classifier")[-1] = layer


@contextmanager
def headless(model: nn.Module, arch: str) -> Iterator[nn.Module]:
    """The model with its head swapped for Identity: it returns the pooled body features."""
    original = head(model, arch)
    set_head(model, arch, nn.Identity())
    try:
        yield model
    finally:
        set_head(model, arch, original)


def early_body(model: nn.Module, arch: str) -> list[nn.Module]:
    """The first half of the body; it gets the smallest learning rate (the lesson's slice)."""
    if arch.startswith("resnet"):
        return [child(model, name) for name in ("conv1", "bn1", "layer1", "layer2")]
    split = 4 if arch.startswith("convnext") else 5
    return list(sequential(model, "features")[:split])


def layer_groups(model: nn.Module, arch: str) -> list[list[nn.Parameter]]:
    """[early body, late body, head], the three groups fastai uses for discriminative LRs."""
    head_ids = {id(p) for p in head(model, arch).parameters()}
    early = [p for m in early_body(model, arch) for p in m.parameters()]
    early_ids = {id(p) for p in early}
    late = [p for p in model.parameters() if id(p) not in head_ids | early_ids]
    return [early, late, list(head(model, arch).parameters())]


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        return load_file(str(path))
    # weights_only: a weights file must never be able to run code.
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(loaded, dict) and "state_dict" in loaded:
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict):
        raise ValueError(f"{path} does not hold a state dict")
    return loaded


def load_body(model: nn.Module, arch: str, state: dict[str, torch.Tensor]) -> None:
    """Load every matching tensor; only the head may be left out (it has other classes)."""
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    head_keys = {k for k in own if k not in usable}
    allowed = {
        f"{name}.{suffix}"
        for name, module in model.named_modules()
        if module is head(model, arch)
        for suffix in ("weight", "bias")
    }
    if not head_keys <= allowed:
        missing = sorted(head_keys - allowed)[:5]
        raise ValueError(f"weights do not fit {arch}: missing or mismatched {missing}")
    model.load_state_dict(usable, strict=False)


@contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def torchvision_weights(arch: str, weights_dir: Path | None) -> tuple[dict[str, torch.Tensor], str]:
    """ImageNet weights: ``<weights_dir>/<arch>.safetensors`` when an operator put one
    there (machines without internet), else torchvision's weights API, cached under
    ``weights_dir``."""
    if weights_dir is not None:
        local = weights_dir / f"{arch}.safetensors"
        if local.is_file():
            return load_file(str(local)), f"weights_dir:{local.name}"
        torch.hub.set_dir(str(weights_dir / "hub"))
    weights = models.get_model_weights(arch).DEFAULT
    with _socket_timeout(DOWNLOAD_TIMEOUT):
        state = weights.get_state_dict(progress=False, check_hash=True)
    return state, f"torchvision:{weights}"


def build_model(
    arch: str,
    num_classes: int,
    pretrained: bool,
    weights_file: Path | None = None,
    weights_dir: Path | None = None,
) -> BuiltModel:
    """The architecture with a new head; pretrained body from a file, torchvision, or nothing."""
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    model = models.get_model(arch, weights=None, num_classes=num_classes)
    if weights_file is not None:
        load_body(model, arch, read_state_dict(weights_file))
        # The name only: results are shown to every member, server paths to nobody.
        name = weights_file.name
        return BuiltModel(model, arch, f"file:{name}", f"Body weights from the file {name}.")
    if not pretrained:
        return BuiltModel(model, arch, "random", "Trained from random initialisation, as asked.")
    try:
        state, source = torchvision_weights(arch, weights_dir)
    except (OSError, RuntimeError, ValueError) as exc:
        # URLError is an OSError: no internet, DNS failure, a timeout, a firewall.
        note = (
            f"Pretrained {arch} weights are unavailable ({type(exc).__name__}: {exc}); "
            "training from random initialisation, which needs far more data and epochs."
        )
        return BuiltModel(model, arch, "random", note)
    load_body(model, arch, state)
    return BuiltModel(model, arch, source, f"Body weights: {source} (ImageNet).")
