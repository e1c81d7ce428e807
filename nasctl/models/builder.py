"""One builder for every space: an `Arch` becomes a plain `torch.nn.Module`.

Blocks are made by `make_block(space, cin, cout, stride, op)`, the single place that turns an op
name into modules, so the standalone network, the cost tables and the supernet's own blocks
(skip, grouped convs; its plain MBConv ops share a superkernel, `search.supernet`) agree.
"""

from __future__ import annotations

import torch
from torch import nn

from nasctl.models.cells import CellNet
from nasctl.models.nb201 import TinyNetwork
from nasctl.space.cells import CellSpace
from nasctl.space.nb201 import Nb201Space
from nasctl.space.space import Arch, SearchSpace, parse_op


def _act(space: SearchSpace) -> nn.Module:
    return nn.ReLU6(inplace=True) if space.activation == "relu6" else nn.ReLU(inplace=True)


def conv_bn(space, cin, cout, k=1, stride=1, groups=1, act=True) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act:
        layers.append(_act(space))
    return nn.Sequential(*layers)


class ChannelShuffle(nn.Module):
    """ShuffleNet's shuffle, needed after a grouped 1x1 conv (FBNet's ``_g2`` ops)."""

    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def forward(self, x):
        n, c, h, w = x.shape
        return x.view(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)


def squeeze_channels(cin: int, se: int) -> int:
    """An SE's squeeze width: se% of the block's input channels (MnasNet, EfficientNet)."""
    return max(1, cin * se // 100)


class SqueezeExcite(nn.Module):
    """x * sigmoid(expand(relu(reduce(avgpool(x))))): MnasNet's SE, the one Single-Path NAS
    searches the ratio of."""

    def __init__(self, channels: int, squeeze: int):
        super().__init__()
        self.reduce = nn.Conv2d(channels, squeeze, 1)
        self.expand = nn.Conv2d(squeeze, channels, 1)

    def forward(self, x):
        return x * torch.sigmoid(self.expand(torch.relu(self.reduce(x.mean((2, 3), keepdim=True)))))


class MBConv(nn.Module):
    """Inverted residual: [1x1 expand] -> KxK depthwise [-> SE] -> 1x1 project, residual when
    shapes match."""

    def __init__(self, space: SearchSpace, cin: int, cout: int, stride: int, op: str):
        super().__init__()
        o = parse_op(op)
        mid = cin * o.expand
        parts = []
        if o.expand != 1 or space.expand_e1:
            parts.append(conv_bn(space, cin, mid, 1, groups=o.groups))
            if o.groups > 1:
                parts.append(ChannelShuffle(o.groups))
        parts.append(conv_bn(space, mid, mid, o.kernel, stride, groups=mid))
        if o.se:
            parts.append(SqueezeExcite(mid, squeeze_channels(cin, o.se)))
        parts.append(conv_bn(space, mid, cout, 1, groups=o.groups, act=False))
        self.body = nn.Sequential(*parts)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.body(x)
        return x + y if self.residual else y


def make_block(space: SearchSpace, cin: int, cout: int, stride: int, op: str) -> nn.Module:
    if parse_op(op).is_skip:
        if stride == 1 and cin == cout:
            return nn.Identity()
        # where the shape changes: FBNet's 1x1 conv + BN + ReLU, or NAS-Bench-Macro's without the ReLU
        return conv_bn(space, cin, cout, 1, stride, act=space.skip_on_reshape != "conv1x1_bn")
    return MBConv(space, cin, cout, stride, op)


class Macro(nn.Module):
    """stem -> fixed blocks -> `self.layers` -> 1x1 head -> pool -> classifier.

    The standalone `Net` and the search's supernet differ only in their searchable layers, so
    they share these ends and a searched arch trains and deploys on the same macro.
    """

    def __init__(self, space: SearchSpace, dropout: float = 0.0):
        super().__init__()
        s = space
        self.stem = conv_bn(s, 3, s.stem_channels, 3, s.stem_stride)
        self.fixed = nn.Sequential(*(make_block(s, f.in_ch, f.out_ch, f.stride, f.op) for f in s.fixed))
        last = s.layers[-1].out_ch
        self.head = nn.Sequential(
            conv_bn(s, last, s.head_channels, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        )
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(s.head_channels, s.params.num_classes)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.head(features)))


class Net(Macro):
    def __init__(self, arch: Arch, dropout: float = 0.0):
        super().__init__(arch.space, dropout)
        s = arch.space
        self.layers = nn.Sequential(
            *(make_block(s, l.in_ch, l.out_ch, l.stride, op) for l, op in zip(s.layers, arch.ops))
        )

    def forward(self, x):
        return self.classify(self.layers(self.fixed(self.stem(x))))


def build(arch: Arch, dropout: float = 0.0) -> nn.Module:
    """The standalone network; `dropout` sits before the classifier (0.2 in the retrain recipe)."""
    if isinstance(arch.space, CellSpace):
        return CellNet(arch, dropout)
    if isinstance(arch.space, Nb201Space):
        return TinyNetwork(arch, dropout)
    return Net(arch, dropout)


def input_shape(space: SearchSpace, batch: int = 1) -> tuple[int, int, int, int]:
    r = space.params.resolution
    return (batch, 3, r, r)
