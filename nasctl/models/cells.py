"""The DARTS cell network: an op name on an edge becomes modules here (`make_op`) and nowhere
else, so the standalone network and the exact cost table agree.

DARTS's evaluation network: a 3x3 stem to 3C channels, cells with C doubled at the two reduction
cells (at 1/3 and 2/3 of the depth), each cell's inputs brought to C channels by a 1x1 ReLU-conv-BN
(a factorized reduce after a reduction cell), the 4 nodes' outputs concatenated, global pooling
and a linear classifier. No auxiliary head and no drop-path: they only act while training.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nasctl.models.count import FIELDS, count_all
from nasctl.space.cells import EDGES, NODES, NONE, CellSpace


def relu_conv_bn(cin: int, cout: int, k: int = 1, stride: int = 1, pad: int = 0, dilation: int = 1, groups: int = 1):
    return nn.Sequential(nn.ReLU(), nn.Conv2d(cin, cout, k, stride, pad, dilation, groups, bias=False), nn.BatchNorm2d(cout))


def dil_conv(c: int, k: int, stride: int, dilation: int) -> nn.Sequential:
    """ReLU -> depthwise KxK (dilated) -> pointwise -> BN."""
    pad = dilation * (k - 1) // 2
    return nn.Sequential(nn.ReLU(), nn.Conv2d(c, c, k, stride, pad, dilation, c, bias=False),
                         nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c))


class FactorizedReduce(nn.Module):
    """Halves the map with two offset stride-2 1x1 convs, so no pixel is simply dropped."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.relu = nn.ReLU()
        self.a = nn.Conv2d(cin, cout // 2, 1, 2, bias=False)
        self.b = nn.Conv2d(cin, cout - cout // 2, 1, 2, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        x = self.relu(x)
        return self.bn(torch.cat([self.a(x), self.b(F.pad(x, (0, 1, 0, 1))[:, :, 1:, 1:])], 1))


BUILDERS = {
    "sep3": lambda c, s: nn.Sequential(dil_conv(c, 3, s, 1), dil_conv(c, 3, 1, 1)),
    "sep5": lambda c, s: nn.Sequential(dil_conv(c, 5, s, 1), dil_conv(c, 5, 1, 1)),
    "dil3": lambda c, s: dil_conv(c, 3, s, 2),
    "dil5": lambda c, s: dil_conv(c, 5, s, 2),
    "max3": lambda c, s: nn.MaxPool2d(3, s, 1),
    "avg3": lambda c, s: nn.AvgPool2d(3, s, 1, count_include_pad=False),
    "skip": lambda c, s: nn.Identity() if s == 1 else FactorizedReduce(c, c),
    NONE: None,  # an absent edge: nothing is built
}


def make_op(op: str, c: int, stride: int) -> nn.Module:
    return BUILDERS[op](c, stride)


class CellInputs(nn.Module):
    """The two previous cells' outputs brought to the cell's C channels (halving input 0 after a
    reduction cell): the states 0 and 1 every node reads from."""

    def __init__(self, spec: dict):
        super().__init__()
        c = spec["C"]
        self.pre0 = FactorizedReduce(spec["C_pp"], c) if spec["reduce_prev"] else relu_conv_bn(spec["C_pp"], c)
        self.pre1 = relu_conv_bn(spec["C_p"], c)

    def forward(self, s0, s1) -> list:
        return [self.pre0(s0), self.pre1(s1)]


class Cell(nn.Module):
    def __init__(self, spec: dict, ops: tuple[str, ...]):
        super().__init__()
        c = spec["C"]
        self.pre = CellInputs(spec)
        self.inputs = [[inp for (n, inp), op in zip(EDGES, ops) if n == node and op != NONE] for node in range(NODES)]
        self.edges = nn.ModuleDict({
            f"{n}_{inp}": make_op(op, c, 2 if spec["reduce"] and inp < 2 else 1)
            for (n, inp), op in zip(EDGES, ops) if op != NONE
        })

    def forward(self, s0, s1):
        states = self.pre(s0, s1)
        for node, inputs in enumerate(self.inputs):
            states.append(sum(self.edges[f"{node}_{i}"](states[i]) for i in inputs))
        return torch.cat(states[2:], 1)


class CellNet(nn.Module):
    def __init__(self, arch, dropout: float = 0.0):
        super().__init__()
        s: CellSpace = arch.space
        half = len(EDGES)
        self.stem = nn.Sequential(nn.Conv2d(3, s.stem_channels, 3, 1, 1, bias=False), nn.BatchNorm2d(s.stem_channels))
        self.cells = nn.ModuleList(Cell(spec, arch.ops[half:] if spec["reduce"] else arch.ops[:half]) for spec in s.cells)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(s.out_channels, s.params.num_classes)

    def forward(self, x):
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1)
        return self.classifier(self.dropout(self.pool(s1)))


def edge_costs(space: CellSpace) -> dict[str, np.ndarray]:
    """L x K tables (`count_all`'s figures) of each op on each edge, summed over the cells of its type."""
    tables = {k: np.zeros(space.allowed.shape, np.int64) for k in FIELDS}
    for spec in space.cells:
        first = len(EDGES) if spec["reduce"] else 0
        for e, (_, inp) in enumerate(EDGES):
            for k, op in enumerate(space.ops):
                if op == NONE:
                    continue
                stride = 2 if spec["reduce"] and inp < 2 else 1
                hw = -(-spec["hw"] // 2) if spec["reduce"] and inp >= 2 else spec["hw"]  # nodes of a reduction cell are halved
                with torch.device("meta"):
                    m = make_op(op, spec["C"], stride)
                for key, v in count_all(m, (1, spec["C"], hw, hw)).items():
                    tables[key][first + e, k] += v
    return tables
