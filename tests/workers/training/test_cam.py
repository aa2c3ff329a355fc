"""The exported heatmap output is Grad-CAM: the closed form agrees with autograd."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from workers.training.cam import WithCam
from workers.training.interpret import gradcam
from workers.training.model import build_model

# Building ConvNeXt and taking six gradients of each model: seconds each.
pytestmark = pytest.mark.slow


# The three shapes of head: pooling and Linear (ResNets alike), pooling, dropout and Linear,
# pooling, LayerNorm and Linear.
@pytest.mark.parametrize("arch", ["resnet18", "efficientnet_b0", "convnext_tiny"])
def test_the_cam_output_is_autograds_grad_cam_and_the_logits_are_the_models(arch: str) -> None:
    torch.manual_seed(0)
    model = build_model(arch, 3, pretrained=False).model.eval()
    for module in model.modules():
        # Freshly built norms are the identity (weight 1, bias 0, running mean 0): give them
        # real values, so that the LayerNorm part of ConvNeXt's closed form is exercised.
        if isinstance(module, nn.LayerNorm | nn.BatchNorm2d):
            with torch.no_grad():
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(images)
        logits, cam = WithCam(model, arch).eval()(images)
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)
    assert cam.shape[:2] == (2, 3)

    compared = 0
    for n in range(2):
        for target in range(3):
            cpu = torch.device("cpu")
            autograd = torch.from_numpy(gradcam(model, arch, images[n], target, cpu))
            heat = torch.relu(cam[n, target])[None, None]
            heat = nn.functional.interpolate(heat, size=(64, 64), mode="bilinear").squeeze()
            if float(heat.max()) > 0:
                heat = heat / heat.max()
                compared += 1
            torch.testing.assert_close(heat, autograd, rtol=1e-3, atol=1e-3)
    assert compared >= 3  # most maps are not all zero, so the comparison says something
