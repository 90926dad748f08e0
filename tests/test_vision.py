"""llmlab.vision: the sprint-04 CNN and ResNet (shapes, parameter counts, BasicBlock parity)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models.resnet import BasicBlock as TorchvisionBasicBlock

from llmlab.errors import LLMLabError
from llmlab.vision import (
    MNISTCNN,
    BasicBlock,
    ResNetMNIST,
    build_model,
    count_parameters,
    layer_summary,
)


def _cnn_params(c1: int, c2: int, hidden: int, classes: int = 10) -> int:
    conv1 = 1 * c1 * 9 + 2 * c1  # 3x3 kernels without bias + batch-norm scale and shift
    conv2 = c1 * c2 * 9 + 2 * c2
    fc1 = c2 * 7 * 7 * hidden + hidden  # two 2x2 pools: 28 -> 14 -> 7
    return conv1 + conv2 + fc1 + hidden * classes + classes


def _block_params(c_in: int, c_out: int) -> int:
    n = c_in * c_out * 9 + c_out * c_out * 9 + 4 * c_out
    if c_in != c_out:
        n += c_in * c_out + 2 * c_out  # 1x1 projection + its batch-norm
    return n


@pytest.mark.parametrize(("channels", "hidden"), [((32, 64), 128), ((8, 16), 32)])
def test_cnn_shapes_and_parameter_count(channels: tuple[int, int], hidden: int) -> None:
    model = MNISTCNN(channels=channels, hidden=hidden)
    assert model(torch.randn(5, 1, 28, 28)).shape == (5, 10)
    assert count_parameters(model) == _cnn_params(*channels, hidden)


def test_resnet_shapes_and_parameter_count() -> None:
    model = ResNetMNIST(widths=(16, 32, 64), blocks=(2, 1, 1))
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 10)
    expected = (9 * 16 + 2 * 16) + 2 * _block_params(16, 16) + _block_params(16, 32)
    expected += _block_params(32, 64) + 64 * 10 + 10
    assert count_parameters(model) == expected


@pytest.mark.parametrize(("c_in", "c_out", "stride"), [(16, 16, 1), (16, 32, 2)])
def test_basic_block_matches_torchvision(c_in: int, c_out: int, stride: int) -> None:
    """Same weights (torchvision's attribute names), same outputs and gradients."""
    torch.manual_seed(0)
    ours = BasicBlock(c_in, c_out, stride)
    downsample = None
    if ours.downsample is not None:
        downsample = nn.Sequential(
            nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
        )
    ref = TorchvisionBasicBlock(c_in, c_out, stride, downsample)
    ref.load_state_dict(ours.state_dict())  # strict: every name and shape must match
    for m in (ours, ref):  # non-trivial batch-norm parameters, so they matter in the check
        for bn in (m.bn1, m.bn2):
            nn.init.uniform_(bn.weight, 0.5, 1.5)
            nn.init.uniform_(bn.bias, -0.5, 0.5)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(4, c_in, 14, 14)
    for train in (True, False):
        ours.train(train)
        ref.train(train)
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        ya, yb = ours(xa), ref(xb)
        torch.testing.assert_close(ya, yb)
        ya.square().sum().backward()
        yb.square().sum().backward()
        torch.testing.assert_close(xa.grad, xb.grad)
    torch.testing.assert_close(ours.conv1.weight.grad, ref.conv1.weight.grad)
    assert ya.shape == (4, c_out, 14 // stride, 14 // stride)


def test_basic_block_with_zeroed_residual_branch_is_the_identity() -> None:
    torch.manual_seed(0)
    block = BasicBlock(8, 8).eval()
    x = torch.relu(torch.randn(2, 8, 10, 10))  # block inputs come out of a ReLU: >= 0
    assert not torch.allclose(block(x), x)  # a live residual branch changes the input
    nn.init.zeros_(block.bn2.weight)
    nn.init.zeros_(block.bn2.bias)
    torch.testing.assert_close(block(x), x, rtol=0, atol=0)


def test_zero_init_residual_starts_same_width_blocks_as_identity() -> None:
    torch.manual_seed(0)
    model = ResNetMNIST(blocks=(2, 1, 1), zero_init_residual=True).eval()
    x = torch.relu(torch.randn(2, 16, 28, 28))
    for block in model.stages[0]:
        torch.testing.assert_close(block(x), x, rtol=0, atol=0)
    plain = ResNetMNIST(blocks=(2, 1, 1)).eval()
    assert not torch.allclose(plain.stages[0][0](x), x)


@pytest.mark.parametrize("name", ["cnn", "resnet"])
def test_layer_summary_covers_every_parameter_and_keeps_the_mode(name: str) -> None:
    model = build_model(name)
    model.train()
    rows = layer_summary(model)
    assert model.training
    assert sum(r["params"] for r in rows) == count_parameters(model)
    assert rows[-1]["output_shape"] == (1, 10)
    if name == "cnn":
        shapes = [r["output_shape"] for r in rows if r["type"] == "MaxPool2d"]
        c1, c2 = (r["output_shape"][1] for r in rows if r["type"] == "Conv2d")
        assert shapes == [(1, c1, 14, 14), (1, c2, 7, 7)]
    else:
        assert [r["output_shape"][-1] for r in rows if r["type"] == "BasicBlock"] == [28, 14, 7]


def test_build_model_rejects_unknown_names() -> None:
    with pytest.raises(LLMLabError, match="choose from"):
        build_model("vgg")
