"""Small image classifiers for 28x28 grey-scale digits (sprint 04).

- `MNISTCNN`: two conv -> batch-norm -> ReLU -> max-pool stages (28 -> 14 -> 7 pixels), then
  an MLP head: 220,330 parameters with the defaults, ~97% on the MNIST subset in a minute.
- `BasicBlock`: the ResNet-18/34 residual block, `relu(F(x) + shortcut(x))`, with the same
  attribute names as `torchvision.models.resnet.BasicBlock` so their weights are interchangeable.
- `ResNetMNIST`: a stem conv, three stages of `BasicBlock`s (28 -> 14 -> 7 pixels), global
  average pooling and a linear classifier.
- `layer_summary`: output shape and parameter count of each layer for one example input
  (what `define_cnn.py` and `define_resnet_mnist.py` print).
- `count_parameters`: number of (trainable) parameters.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from llmlab.errors import LLMLabError


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of parameters (only those with `requires_grad` by default)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _conv_stage(c_in: int, c_out: int) -> nn.Sequential:
    # bias=False: the batch-norm right after it has its own shift (beta), a conv bias is redundant.
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class MNISTCNN(nn.Module):
    """conv-bn-relu-pool x2 -> flatten -> linear-relu-dropout -> linear (10 logits).

    Input `(N, 1, 28, 28)`, output `(N, num_classes)` logits. Padding 1 keeps each 3x3 conv's
    spatial size; each 2x2 max-pool halves it: 28 -> 14 -> 7.
    """

    def __init__(
        self,
        channels: Sequence[int] = (32, 64),
        hidden: int = 64,
        num_classes: int = 10,
        dropout: float = 0.25,
        in_channels: int = 1,
        image_size: int = 28,
    ) -> None:
        super().__init__()
        c1, c2 = channels
        self.features = nn.Sequential(_conv_stage(in_channels, c1), _conv_stage(c1, c2))
        side = image_size // 4
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c2 * side * side, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class BasicBlock(nn.Module):
    """`relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))` (He et al., 2015).

    When the block changes resolution (`stride > 1`) or width, the shortcut is a 1x1 conv +
    batch-norm (`downsample`) so the two branches have the same shape; otherwise it is the
    identity, and the block only has to learn the *residual* F(x) = H(x) - x.
    """

    expansion = 1  # torchvision's name: output channels = planes * expansion

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)  # the skip connection


class ResNetMNIST(nn.Module):
    """A small ResNet: stem conv -> stages of BasicBlocks -> global average pool -> linear.

    `widths=(16, 32, 64)`, `blocks=(1, 1, 1)`: stage 1 keeps 28x28, stages 2-3 halve the
    resolution (stride 2) while doubling the width. `zero_init_residual=True` starts every
    block's last batch-norm scale at 0, so each block begins as the identity (Goyal et al.).
    """

    def __init__(
        self,
        widths: Sequence[int] = (16, 32, 64),
        blocks: Sequence[int] = (1, 1, 1),
        num_classes: int = 10,
        in_channels: int = 1,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        )
        stages, in_planes = [], widths[0]
        for i, (width, n_blocks) in enumerate(zip(widths, blocks, strict=True)):
            stride = 1 if i == 0 else 2
            layers = [BasicBlock(in_planes, width, stride)]
            layers += [BasicBlock(width, width) for _ in range(n_blocks - 1)]
            stages.append(nn.Sequential(*layers))
            in_planes = width
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.stages(self.stem(x)))
        return self.fc(torch.flatten(x, 1))


def build_model(name: str, **kwargs) -> nn.Module:
    """`"cnn"` -> `MNISTCNN`, `"resnet"` -> `ResNetMNIST` (kwargs go to the constructor)."""
    models = {"cnn": MNISTCNN, "resnet": ResNetMNIST}
    if name not in models:
        raise LLMLabError(f"unknown model {name!r}: choose from {sorted(models)}")
    return models[name](**kwargs)


def layer_summary(
    model: nn.Module, input_shape: Sequence[int] = (1, 1, 28, 28)
) -> list[dict[str, object]]:
    """Run one zero input through `model`; list each layer's name, type, output shape, params.

    Leaf modules are listed one by one; a `BasicBlock` is listed as one row (its own layers
    are an implementation detail of the block).
    """
    rows: list[dict[str, object]] = []
    hooks = []
    skip_prefixes: list[str] = []
    for name, module in model.named_modules():
        if not name or any(name.startswith(p) for p in skip_prefixes):
            continue
        is_block = isinstance(module, BasicBlock)
        if is_block:
            skip_prefixes.append(name + ".")
        elif list(module.children()):
            continue

        def hook(mod, _inp, out, name=name):
            rows.append(
                {
                    "name": name,
                    "type": type(mod).__name__,
                    "output_shape": tuple(out.shape),
                    "params": sum(p.numel() for p in mod.parameters()),
                }
            )

        hooks.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()  # batch-norm with a batch of 1 needs running statistics
    try:
        with torch.no_grad():
            model(torch.zeros(*input_shape))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return rows


def format_summary(rows: list[dict[str, object]]) -> str:
    """The rows of `layer_summary` as a fixed-width table."""
    lines = [f"{'layer':<22}{'type':<19}{'output shape':<20}{'params':>10}"]
    for r in rows:
        shape = str(tuple(r["output_shape"]))
        lines.append(f"{r['name']:<22}{r['type']:<19}{shape:<20}{r['params']:>10,}")
    return "\n".join(lines)
