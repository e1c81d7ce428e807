"""NAS-Bench-201's TinyNetwork, module for module as in the authors' code
(D-X-Y/AutoDL-Projects, xautodl/models/cell_infers/), so parameters match theirs to the integer and
the latencies HELP measured on it describe this network.

A 3x3 conv + BN stem; 3 stages of N cells at C, 2C and 4C channels with a residual reduction block
(ReLU-conv3x3/2-BN, ReLU-conv3x3-BN; shortcut 2x2 average pool + 1x1 conv) between them; BN + ReLU,
global average pool, linear classifier. In a cell node j is the sum of the ops on its edges from
every earlier node, and the cell's output is node 3.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from nasctl.models.count import FIELDS, count_all
from nasctl.space.nb201 import EDGES, NODES, Nb201Space


def relu_conv_bn(cin: int, cout: int, k: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.ReLU(), nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout))


class Zero(nn.Module):
    """`none`: zeros shaped like the input, computed from it as the authors do (x * 0), so a cell
    cut off from its input still runs, exports and is timed like any other."""

    def forward(self, x):
        return x.mul(0.0)


BUILDERS = {
    "none": lambda c: Zero(),
    "skip_connect": lambda c: nn.Identity(),
    "nor_conv_1x1": lambda c: relu_conv_bn(c, c, 1),
    "nor_conv_3x3": lambda c: relu_conv_bn(c, c, 3),
    "avg_pool_3x3": lambda c: nn.AvgPool2d(3, 1, 1, count_include_pad=False),
}


def make_op(op: str, c: int) -> nn.Module:
    return BUILDERS[op](c)


class Cell(nn.Module):
    def __init__(self, ops: tuple[str, ...], c: int):
        super().__init__()
        self.edges = nn.ModuleList(make_op(op, c) for op in ops)
        # per node after the input, its (edge, source node) pairs: worked out once, not per forward
        self.inputs = [[(e, inp) for e, (n, inp) in enumerate(EDGES) if n == node] for node in range(1, NODES)]

    def forward(self, x):
        nodes = [x]
        for inputs in self.inputs:
            nodes.append(sum(self.edges[e](nodes[inp]) for e, inp in inputs))
        return nodes[-1]


class ResBlock(nn.Module):
    """The reduction block between stages (the authors' ResNetBasicblock at stride 2)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv_a = relu_conv_bn(cin, cout, 3, 2)
        self.conv_b = relu_conv_bn(cout, cout, 3)
        self.downsample = nn.Sequential(nn.AvgPool2d(2, 2), nn.Conv2d(cin, cout, 1, bias=False))

    def forward(self, x):
        return self.downsample(x) + self.conv_b(self.conv_a(x))


class TinyNetwork(nn.Module):
    def __init__(self, arch, dropout: float = 0.0):
        super().__init__()
        s: Nb201Space = arch.space
        c = s.stages[0]["C"]
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))
        blocks = []
        for stage in s.stages:
            if stage["C_in"] is not None:
                blocks.append(ResBlock(stage["C_in"], stage["C"]))
            blocks += [Cell(arch.ops, stage["C"]) for _ in range(s.cells_per_stage)]
        self.cells = nn.Sequential(*blocks)
        last = s.stages[-1]["C"]
        self.lastact = nn.Sequential(nn.BatchNorm2d(last), nn.ReLU())
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(last, s.params.num_classes)

    def forward(self, x):
        return self.classifier(self.dropout(self.pool(self.lastact(self.cells(self.stem(x))))))


def edge_costs(space: Nb201Space) -> dict[str, np.ndarray]:
    """L x K tables (`count_all`'s figures) of each op on each edge, summed over every cell."""
    tables = {k: np.zeros(space.allowed.shape, np.int64) for k in FIELDS}
    for stage in space.stages:
        for k, op in enumerate(space.ops):
            with torch.device("meta"):
                m = make_op(op, stage["C"])
            got = count_all(m, (1, stage["C"], stage["hw"], stage["hw"]))
            for key, v in got.items():
                tables[key][:, k] += v * space.cells_per_stage
    return tables
