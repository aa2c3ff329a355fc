"""The model as exported: its logits, and per class the Grad-CAM map of its last conv block.

The API serves predictions through ONNX Runtime and must not import torch, so it cannot take
gradients. It does not need to: every architecture here ends in global average pooling, then
(for ConvNeXt) a LayerNorm, then one Linear layer. The gradient of a class's logit with
respect to the last block's output A (N, K, h, w) is therefore the same at every position,
``g_c / (h * w)``, where ``g_c`` is the logit's gradient with respect to the pooled vector:

- pooling then Linear (ResNet, EfficientNet; dropout is off in eval): ``g_c = W[c]``;
- pooling, LayerNorm (gamma, eps), Linear (ConvNeXt): with ``v = gamma * W[c]``, the pooled
  vector p, its standardised form x and standard deviation s over K channels,
  ``g_c = (v - mean(v) - x * mean(v * x)) / s``.

Grad-CAM weighs A's channels by the spatial mean of that gradient, ``g_c / (h * w)``, sums
them and keeps the positive part. The forward below computes ``sum_k g_c[k] * A[k]`` for
every class in the graph itself (an ``h * w`` times larger map, which the normalisation to
[0, 1] removes), so the exported ONNX file has a second output, ``cam`` (N, classes, h, w),
and the predictor turns it into a heatmap with numpy alone. tests/workers/training/
test_cam.py checks it against autograd's Grad-CAM (workers/training/interpret.py).
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.convnext import LayerNorm2d

from workers.training.model import child, head, sequential


class WithCam(nn.Module):
    """``forward(images) -> (logits, cam)``; the logits are the wrapped model's own."""

    def __init__(self, model: nn.Module, arch: str) -> None:
        super().__init__()
        self.norm: LayerNorm2d | None = None
        if arch.startswith("resnet"):
            names = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
            self.body: nn.Module = nn.Sequential(*(child(model, n) for n in names))
        else:
            self.body = child(model, "features")
            first = sequential(model, "classifier")[0]
            if isinstance(first, LayerNorm2d):
                self.norm = first
        self.pool = child(model, "avgpool")
        self.fc = head(model, arch)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.body(images)
        pooled = torch.flatten(self.pool(features), 1)
        weight = self.fc.weight  # (classes, K)
        if self.norm is None:
            logits = self.fc(pooled)
            cam = torch.einsum("ck,nkhw->nchw", weight, features)
            return logits, cam
        normed = torch.flatten(self.norm(self.pool(features)), 1)
        logits = self.fc(normed)
        mean = pooled.mean(1, keepdim=True)
        var = pooled.var(1, unbiased=False, keepdim=True)
        inv_std = torch.rsqrt(var + self.norm.eps)  # (N, 1)
        standard = (pooled - mean) * inv_std  # (N, K)
        v = weight * self.norm.weight  # (classes, K)
        v_centred = v - v.mean(1, keepdim=True)
        projection = torch.einsum("ck,nk->nc", v, standard) / pooled.shape[1]  # mean(v * x)
        grad = inv_std.unsqueeze(-1) * (
            v_centred.unsqueeze(0) - standard.unsqueeze(1) * projection.unsqueeze(-1)
        )  # (N, classes, K)
        cam = torch.einsum("nck,nkhw->nchw", grad, features)
        return logits, cam
