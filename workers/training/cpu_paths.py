"""Faster CPU paths for two slow spots of PyTorch's CPU kernels in training-sized models.

1. The weight gradient of a convolution whose output map is tiny. oneDNN, which computes
   convolutions on the CPU, takes 3-8x as long for a 3x3 convolution with a 2x2 output
   (resnet's last stage at 64 px) as unfolding the input and one matrix product, and
   1.2-4x for a 3x3 output; from 4x4 on it is even or faster. 1x1 convolutions need no
   unfold and win up to 5x5. (AVX-512, 2 threads, batches of 8 to 64.)
2. Max pooling of an NCHW tensor: ATen's NCHW kernel took 6.7 ms for resnet's stem pool
   of 32 images at 64 px, its channels-last kernel 0.6 ms. Pooling in channels-last and
   scattering the gradient back by the pooling indices took 2.9 ms forward and backward
   against 7.6 ms, with bit-identical results.

``cpu_fast_paths(model, device)`` routes the convolutions and pools that qualify through
these paths while it is open, on the CPU only. The forward results, the input gradients
and the choice of maxima are PyTorch's own; the weight gradient is the same sum in
another order. The model's modules, parameters and state dict do not change; closing it
restores the modules as they were (export traces the plain modules).
"""

from __future__ import annotations

import copy
import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

# Output positions (height x width) up to which the matrix product is faster.
MAX_POSITIONS = 9
MAX_POSITIONS_POINTWISE = 25

Pair = tuple[int, int]


def _pair(value: Any) -> Pair:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def conv_qualifies(conv: nn.Module) -> bool:
    """Plain convolutions only: one group, no dilation, zero padding given as numbers."""
    return (
        type(conv) is nn.Conv2d
        and conv.groups == 1
        and _pair(conv.dilation) == (1, 1)
        and conv.padding_mode == "zeros"
        and not isinstance(conv.padding, str)
    )


def pool_qualifies(pool: nn.Module) -> bool:
    return (
        type(pool) is nn.MaxPool2d
        and _pair(pool.dilation) == (1, 1)
        and not pool.ceil_mode
        and not pool.return_indices
    )


def output_positions(conv: nn.Conv2d, height: int, width: int) -> int:
    (kh, kw), (sh, sw), (ph, pw) = _pair(conv.kernel_size), _pair(conv.stride), _pair(conv.padding)
    return ((height + 2 * ph - kh) // sh + 1) * ((width + 2 * pw - kw) // sw + 1)


def prefers_gemm(conv: nn.Conv2d, height: int, width: int) -> bool:
    pointwise = _pair(conv.kernel_size) == (1, 1) and _pair(conv.padding) == (0, 0)
    limit = MAX_POSITIONS_POINTWISE if pointwise else MAX_POSITIONS
    return output_positions(conv, height, width) <= limit


def weight_grad(
    x: torch.Tensor, grad_out: torch.Tensor, weight_shape: torch.Size, stride: Pair, padding: Pair
) -> torch.Tensor:
    """dL/dW of a plain convolution: grad_out (O x N*L) times the unfolded input (N*L x C*k*k)."""
    n, out_channels, out_h, out_w = grad_out.shape
    positions = out_h * out_w
    kernel = (int(weight_shape[2]), int(weight_shape[3]))
    if kernel == (1, 1) and padding == (0, 0):
        picked = x[:, :, :: stride[0], :: stride[1]]
        cols = picked.permute(0, 2, 3, 1).reshape(n * positions, -1)
    else:
        unfolded = F.unfold(x, kernel, padding=padding, stride=stride)  # N x C*k*k x L
        cols = unfolded.transpose(1, 2).reshape(n * positions, -1)
    grads = grad_out.permute(1, 0, 2, 3).reshape(out_channels, n * positions)
    return torch.mm(grads, cols).view(weight_shape)


class _Conv2d(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        stride: Pair,
        padding: Pair,
    ) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding = stride, padding
        return F.conv2d(x, weight, bias, stride, padding)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        grad_x = grad_w = grad_b = None
        if need_x:
            grad_x = torch.ops.aten.convolution_backward(
                grad_out, x, weight, None, ctx.stride, ctx.padding, (1, 1), False, (0, 0), 1,
                (True, False, False),
            )[0]  # fmt: skip
        if need_w:
            grad_w = weight_grad(x, grad_out, weight.shape, ctx.stride, ctx.padding)
        if need_b:
            grad_b = grad_out.sum((0, 2, 3))
        return grad_x, grad_w, grad_b, None, None


class _MaxPool2d(torch.autograd.Function):
    """Channels-last pooling; the gradient goes back to NCHW through the indices."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, kernel: Pair, stride: Pair, padding: Pair) -> Any:
        out, indices = F.max_pool2d(
            x.contiguous(memory_format=torch.channels_last),
            kernel,
            stride,
            padding,
            return_indices=True,
        )
        # Indices count within each (image, channel) plane whatever the memory format.
        ctx.save_for_backward(indices.contiguous())
        ctx.input_shape = x.shape
        return out.contiguous()

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        (indices,) = ctx.saved_tensors
        n, c, h, w = ctx.input_shape
        grad_x = grad_out.new_zeros(n, c, h * w)
        grad_x.scatter_add_(2, indices.view(n, c, -1), grad_out.reshape(n, c, -1))
        return grad_x.view(n, c, h, w), None, None, None


def _conv_forward(self: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    if (
        torch.is_grad_enabled()
        and self.weight.requires_grad
        and x.dim() == 4
        and prefers_gemm(self, x.shape[2], x.shape[3])
    ):
        out: torch.Tensor = _Conv2d.apply(
            x, self.weight, self.bias, _pair(self.stride), _pair(self.padding)
        )
        return out
    return nn.Conv2d.forward(self, x)


def _pool_forward(self: nn.MaxPool2d, x: torch.Tensor) -> torch.Tensor:
    if x.dim() != 4 or not x.is_contiguous():
        return nn.MaxPool2d.forward(self, x)
    kernel, padding = _pair(self.kernel_size), _pair(self.padding)
    stride = _pair(self.stride if self.stride is not None else self.kernel_size)
    if torch.is_grad_enabled() and x.requires_grad:
        out: torch.Tensor = _MaxPool2d.apply(x, kernel, stride, padding)
        return out
    pooled = F.max_pool2d(x.contiguous(memory_format=torch.channels_last), kernel, stride, padding)
    return pooled.contiguous()


@contextmanager
def cpu_fast_paths(model: nn.Module, device: torch.device) -> Iterator[None]:
    """While open, the model's qualifying convolutions and max pools take the paths above
    (CPU only; elsewhere it does nothing)."""
    patched: list[nn.Module] = []
    if device.type == "cpu":
        for module in model.modules():
            forward = (
                _conv_forward
                if conv_qualifies(module)
                else _pool_forward
                if pool_qualifies(module)
                else None
            )
            if forward is not None:
                # An instance attribute shadows the class's forward; deleting it restores it.
                module.forward = types.MethodType(forward, module)
                patched.append(module)
    try:
        yield
    finally:
        for module in patched:
            del module.forward


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` for inference with each BatchNorm folded into the convolution
    before it (in its parent's module order, as torchvision's resnets and their downsample
    branches are built): ``conv`` then ``bn`` computes ``conv'`` with the statistics and
    affine in its weights and bias, one pass over the activations fewer. The same function
    in eval mode (to float rounding); ``model`` itself is not touched."""
    folded = copy.deepcopy(model).eval()

    def walk(parent: nn.Module) -> None:
        names = list(parent._modules)
        for before, name in zip([None, *names], names, strict=False):
            child = parent._modules[name]
            previous = parent._modules[before] if before is not None else None
            if (
                type(child) is nn.BatchNorm2d
                and type(previous) is nn.Conv2d
                and child.track_running_stats
                and before is not None
            ):
                parent._modules[before] = fuse_conv_bn_eval(previous, child)
                parent._modules[name] = nn.Identity()
            elif child is not None:
                walk(child)

    walk(folded)
    return folded


def inference_copy(model: nn.Module, device: torch.device) -> nn.Module:
    """The model as scoring runs it: BatchNorm folded into the convolutions and, on the CPU,
    in channels_last. Measured on resnet18 at 64 px (2 threads, 2,000 images, batches of 64):
    3.8 s plain, 3.1-3.3 s in channels_last (for inference, unlike training), 2.8 s folded
    as well. On CUDA the model is already channels_last where that helps (fit.place)."""
    folded = fold_batchnorm(model)
    if device.type == "cpu":
        folded = folded.to(memory_format=torch.channels_last)
    return folded
