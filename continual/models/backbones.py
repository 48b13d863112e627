"""Backbones for image/vector streams: MLP, small CNN, (reduced) ResNet-18.

Every backbone is a ``Classifier``: ``features(x) -> (B, feature_dim)`` (the
penultimate layer, used by LTM and OnPro) followed by a linear ``head`` whose
size comes from the stream.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from continual.types import ConfigError


class Classifier(nn.Module):
    """A feature extractor plus a linear head: ``forward(x) = head(features(x))``."""

    def __init__(self, body: nn.Module, feature_dim: int, n_classes: int) -> None:
        super().__init__()
        self.body = body
        self.feature_dim = feature_dim
        self.n_classes = n_classes
        self.head = nn.Linear(feature_dim, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, ...) -> (B, feature_dim)."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def _mlp(input_shape: tuple[int, ...], hidden: int = 256, depth: int = 2) -> tuple[nn.Module, int]:
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(input_shape)
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    return nn.Sequential(*layers), width


def _small_cnn(input_shape: tuple[int, ...], channels: int = 32, hidden: int = 256) -> tuple[nn.Module, int]:
    if len(input_shape) != 3:
        raise ConfigError(
            f"model 'cnn' needs image inputs (C, H, W), got shape {input_shape}; use model=mlp"
        )
    c, h, w = input_shape
    body = nn.Sequential(
        nn.Conv2d(c, channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(channels, 2 * channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(2 * channels * (h // 4) * (w // 4), hidden), nn.ReLU(),
    )
    return body, hidden


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class _ResNet18Body(nn.Module):
    """ResNet-18 as used across online CL (Lopez-Paz & Ranzato 2017; nf=20 is 'reduced').

    The stem is a 3x3 stride-1 convolution for both 28x28x1 and 32x32x3 inputs;
    the output is globally average-pooled, so any input size >= 8x8 works.
    """

    def __init__(self, in_channels: int, nf: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, nf, 3, 1, 1, bias=False), nn.BatchNorm2d(nf), nn.ReLU()
        )
        widths = [nf, 2 * nf, 4 * nf, 8 * nf]
        layers, cin = [], nf
        for i, cout in enumerate(widths):
            stride = 1 if i == 0 else 2
            layers += [_BasicBlock(cin, cout, stride), _BasicBlock(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.out_dim = cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(self.stem(x))
        return torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)


def _resnet18(input_shape: tuple[int, ...], nf: int = 64) -> tuple[nn.Module, int]:
    if len(input_shape) != 3:
        raise ConfigError(
            f"ResNet-18 needs image inputs (C, H, W), got shape {input_shape}; use model=mlp"
        )
    body = _ResNet18Body(input_shape[0], nf)
    return body, body.out_dim


BACKBONES = {
    "mlp": _mlp,
    "cnn": _small_cnn,
    "resnet18": _resnet18,
    "resnet18_reduced": lambda shape, **kw: _resnet18(shape, **{"nf": 20, **kw}),
}


def build_model(name: str, input_shape: tuple[int, ...], n_classes: int, channels_last: bool | None = None,
                **kwargs) -> Classifier:
    """Build a backbone by name for inputs of ``input_shape`` (no batch dim) and ``n_classes``.

    Names: ``mlp`` (hidden, depth), ``cnn`` (channels, hidden), ``resnet18`` (nf=64),
    ``resnet18_reduced`` (nf=20). ``channels_last`` (default: on for the convolutional
    backbones) stores their weights, and so their activations, as NHWC: 12-17% less CPU time
    per training step of the small CNN (``benchmarks/compile_cost.py``), the same losses.
    """
    if name not in BACKBONES:
        raise ConfigError(f"unknown model {name!r}; choose one of {sorted(BACKBONES)}")
    if n_classes < 1:
        raise ConfigError(f"a classifier needs at least one class, got n_classes={n_classes}")
    bad = {k: v for k, v in kwargs.items() if isinstance(v, int) and not isinstance(v, bool) and v < 1}
    if bad:
        raise ConfigError(f"model {name!r}: sizes must be positive integers, got {bad}")
    body, dim = BACKBONES[name](tuple(input_shape), **kwargs)
    model = Classifier(body, dim, n_classes)
    if channels_last is None:
        channels_last = name != "mlp" and len(input_shape) == 3
    if channels_last:
        if len(input_shape) != 3:
            raise ConfigError(f"channels_last needs image inputs (C, H, W), got input_shape={tuple(input_shape)}")
        model = model.to(memory_format=torch.channels_last)
    return model
