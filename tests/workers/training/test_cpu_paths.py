"""The CPU fast paths give PyTorch's own numbers: the same outputs and input gradients, the
same weight gradients up to summation order, the same pooled maxima and their gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision import models

from workers.training.cpu_paths import (
    _Conv2d,
    _MaxPool2d,
    conv_qualifies,
    cpu_fast_paths,
    inference_copy,
    pool_qualifies,
    prefers_gemm,
)
from workers.training.model import ARCHS, build_model

CPU = torch.device("cpu")


@pytest.mark.parametrize(
    ("channels", "kernel", "stride", "padding", "size", "bias"),
    [
        (16, 3, 1, 1, 2, False),  # resnet's last stage at 64 px
        (16, 3, 2, 1, 4, False),  # its strided first convolution
        (16, 3, 1, 1, 3, True),
        (16, 1, 1, 0, 5, False),  # bottleneck 1x1
        (16, 1, 2, 0, 6, False),  # strided 1x1 (downsample)
        (3, 7, 2, 3, 9, True),
        (8, (3, 1), (2, 1), (1, 0), 5, False),  # non-square kernel, stride and padding
    ],
)
def test_the_gemm_weight_gradient_is_autograds(
    channels: int, kernel: object, stride: object, padding: object, size: int, bias: bool
) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(channels, 24, kernel, stride, padding, bias=bias)  # type: ignore[arg-type]
    x = torch.randn(5, channels, size, size + 1, requires_grad=True)
    expected_out = conv(x)
    grad_out = torch.randn_like(expected_out)
    expected = torch.autograd.grad(expected_out, [x, *conv.parameters()], grad_out)

    out = _Conv2d.apply(x, conv.weight, conv.bias, conv.stride, conv.padding)
    got = torch.autograd.grad(out, [x, *conv.parameters()], grad_out)
    assert torch.equal(out, expected_out)
    assert torch.equal(got[0], expected[0])  # the input gradient is PyTorch's own
    for g, e in zip(got[1:], expected[1:], strict=True):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)


def test_only_input_gradient_or_only_weight_gradient_when_only_one_is_needed() -> None:
    conv = nn.Conv2d(4, 6, 3, padding=1)
    x = torch.randn(2, 4, 2, 2)
    out = _Conv2d.apply(x, conv.weight, conv.bias, (1, 1), (1, 1))
    out.sum().backward()
    assert (
        x.grad is None
        and conv.weight.grad is not None
        and conv.bias is not None
        and conv.bias.grad is not None
    )

    conv.requires_grad_(False)
    x.requires_grad_(True)
    _Conv2d.apply(x, conv.weight, conv.bias, (1, 1), (1, 1)).sum().backward()
    assert x.grad is not None


@pytest.mark.parametrize(("kernel", "stride", "padding"), [(3, 2, 1), (2, 2, 0), (3, 1, 1)])
def test_the_channels_last_pool_is_bit_identical_with_ties(
    kernel: int, stride: int, padding: int
) -> None:
    torch.manual_seed(0)
    # After a ReLU a quarter of the values are zero: many windows have tied maxima.
    x = torch.randn(4, 8, 13, 12).relu().requires_grad_(True)
    expected_out = F.max_pool2d(x, kernel, stride, padding)
    grad_out = torch.randn_like(expected_out)
    (expected,) = torch.autograd.grad(expected_out, x, grad_out)
    out = _MaxPool2d.apply(x, (kernel, kernel), (stride, stride), (padding, padding))
    (got,) = torch.autograd.grad(out, x, grad_out)
    assert out.is_contiguous()
    assert torch.equal(out, expected_out)
    assert torch.equal(got, expected)


def test_the_rule_takes_the_matrix_product_only_for_small_outputs() -> None:
    conv3 = nn.Conv2d(8, 8, 3, padding=1)
    assert prefers_gemm(conv3, 2, 2) and prefers_gemm(conv3, 3, 3)
    assert not prefers_gemm(conv3, 4, 4)
    strided = nn.Conv2d(8, 8, 3, stride=2, padding=1)
    assert prefers_gemm(strided, 6, 6) and not prefers_gemm(strided, 8, 8)
    pointwise = nn.Conv2d(8, 8, 1)
    assert prefers_gemm(pointwise, 5, 5) and not prefers_gemm(pointwise, 6, 6)
    assert not conv_qualifies(nn.Conv2d(8, 8, 3, groups=8))  # depthwise
    assert not conv_qualifies(nn.Conv2d(8, 8, 3, dilation=2))
    assert not conv_qualifies(nn.Conv2d(8, 8, 3, padding="same"))
    assert not conv_qualifies(nn.Conv2d(8, 8, 3, padding=1, padding_mode="reflect"))
    assert not pool_qualifies(nn.MaxPool2d(3, 2, ceil_mode=True))
    assert pool_qualifies(nn.MaxPool2d(3, 2, 1))


def patched(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if "forward" in m.__dict__]


def backward_nodes(tensor: torch.Tensor) -> list[str]:
    """The names of every node of the autograd graph behind ``tensor``."""
    names, seen, todo = [], set(), [tensor.grad_fn]
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.append(type(node).__name__)
        todo.extend(next_node for next_node, _ in node.next_functions)
    return names


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_a_training_step_through_the_fast_paths_matches_the_plain_model(arch: str) -> None:
    torch.manual_seed(0)
    model = models.get_model(arch, num_classes=3).train()
    plain = models.get_model(arch, num_classes=3).train()
    plain.load_state_dict(model.state_dict())
    x, y = torch.randn(6, 3, 64, 64), torch.tensor([0, 1, 2, 0, 1, 2])

    F.cross_entropy(plain(x), y).backward()
    with cpu_fast_paths(model, CPU):
        assert len(patched(model)) > 0
        loss = F.cross_entropy(model(x), y)
        nodes = backward_nodes(loss)
        assert nodes.count("_MaxPool2dBackward") == 1
        # The five convolutions of resnet18's layer4 (2x2 outputs) and every 1x1 convolution
        # with a 4x4 output (layer3): one in resnet18, twelve in resnet50.
        assert nodes.count("_Conv2dBackward") == {"resnet18": 6, "resnet50": 22}[arch]
        loss.backward()
    assert patched(model) == []
    for (name, p), q in zip(model.named_parameters(), plain.parameters(), strict=True):
        assert p.grad is not None and q.grad is not None, name
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5, msg=name)
    # BatchNorm saw the same batches: the running statistics agree too.
    for (name, a), b in zip(model.state_dict().items(), plain.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("arch", ARCHS)
def test_inference_through_the_fast_paths_is_the_plain_models(arch: str) -> None:
    model = build_model(arch, 3, pretrained=False).model.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        expected = model(x)
        with cpu_fast_paths(model, CPU):
            got = model(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_nothing_changes_off_the_cpu() -> None:
    model = models.resnet18(num_classes=3)
    with cpu_fast_paths(model, torch.device("cuda")):
        assert patched(model) == []


def test_scoring_copy_folds_batchnorm_and_computes_the_same() -> None:
    torch.manual_seed(0)
    model = models.resnet18(num_classes=3)
    model.train()
    with torch.no_grad():  # BatchNorm statistics that are not the identity
        for _ in range(3):
            model(torch.randn(8, 3, 64, 64) * 2 + 0.5)
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    scorer = inference_copy(model, torch.device("cpu"))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in scorer.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 20
    x = torch.randn(16, 3, 64, 64)
    with torch.inference_mode():
        expected, got = model(x), scorer(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    # The trained model itself is untouched (it is exported and scored again later).
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
