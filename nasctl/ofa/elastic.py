"""Once-for-All's elastic supernet over a layered space, and the plain subnets cut out of it.

The space's own choices are the elastic dimensions: a layer's MBConv kernels (nested, kK the
centre of the largest, passed through OFA's kernel transformation matrices), its expansions
(the first cin*E channels, sorted by importance before width becomes elastic) and, where the
space allows skip, its depth. So every subnet is an arch of the space, and the space's predictors
and profiling apply to it unchanged.

`Elastic` holds, per layer, which ops each progressive-shrinking phase may draw; `subnet` copies an
arch's slices into the standalone `build(arch)` network, which the export path ships as it is.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import update_bn

from nasctl.errors import UserError
from nasctl.models import build
from nasctl.models.builder import squeeze_channels
from nasctl.search.supernet import SuperKernel, SuperNet
from nasctl.space.space import Arch, LayerSpec, Op, SearchSpace

PHASES = ("full", "kernel", "depth", "expand")  # OFA's order: each phase makes one more dimension elastic


class ElasticKernel(SuperKernel):
    """A superkernel whose smaller kernels are the centre of the next larger one times a learned
    (k² x k²) matrix shared by the layer's channels (OFA's kernel transformation). Why: the
    centre of a 7x7 kernel trained as a 7x7 is not a good 3x3; the matrix lets the small kernel
    differ from that centre without a copy of its own. Identity at the start, so a fresh
    `ElasticKernel` computes what the plain nesting does."""

    def __init__(self, space: SearchSpace, layer: LayerSpec, ops: list[Op]):
        super().__init__(space, layer, ops)
        self.kernels = sorted({o.kernel for o in ops}, reverse=True)
        # an e1 op without an expand conv reads the block's input channels as its middle ones
        self.sortable = self.expand is not None and (space.expand_e1 or all(o.expand != 1 for o in ops))
        self.transforms = nn.ParameterDict({f"{a}to{b}": nn.Parameter(torch.eye(b * b))
                                            for a, b in zip(self.kernels, self.kernels[1:])})

    def kernel(self, mid: int, k: int) -> torch.Tensor:
        w = self.depthwise[:mid]
        for a, b in zip(self.kernels, self.kernels[1:]):
            if a == k:
                break
            c = (a - b) // 2
            w = (w[:, :, c:c + b, c:c + b].reshape(mid, b * b) @ self.transforms[f"{a}to{b}"]).reshape(mid, 1, b, b)
        return w

    @torch.no_grad()
    def sort_channels(self) -> None:
        """Reorder the middle channels by importance (the L1 norm of their projection weights),
        most important first, so that a narrow expansion keeps the channels that matter (OFA,
        before elastic width). The function of the widest op is unchanged. Not where it is not
        `sortable`."""
        if not self.sortable:
            return
        order = self.project.abs().sum((0, 2, 3)).argsort(descending=True)
        for p in (self.expand, self.depthwise):
            p.copy_(p[order])
        self.project.copy_(self.project[:, order])
        for bn in self.bn[:2]:
            for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var):
                t.copy_(t[order])
        if self.se is not None:
            self.se.reduce.weight.copy_(self.se.reduce.weight[:, order])
            self.se.expand.weight.copy_(self.se.expand.weight[order])
            self.se.expand.bias.copy_(self.se.expand.bias[order])


class Elastic:
    """Per layer, the op indices each phase may draw, and the largest and smallest of them."""

    def __init__(self, net: SuperNet):
        self.space = space = net.space
        self.phase_ops: dict[str, list[list[int]]] = {p: [] for p in PHASES}
        self.cost = np.zeros(space.allowed.shape)  # what "smallest" orders by: kernel² x expansion, skip least
        for i, layer in enumerate(net.layers):
            mb = {k: o for k, o in layer.ops.items() if not o.is_skip}
            if not mb or layer.superkernel is None or set(layer.shared) != {o.name for o in mb.values()}:
                raise UserError(f"Once-for-All needs every searchable layer's ops to be plain MBConvs (+ skip); "
                                f"layer {i + 1} of {space.name} has {', '.join(o.name for o in layer.ops.values())}")
            kmax, emax = max(o.kernel for o in mb.values()), max(o.expand for o in mb.values())
            largest = [k for k, o in mb.items() if o.kernel == kmax and o.expand == emax]
            kernels = [k for k, o in mb.items() if o.expand == emax]
            if len(largest) != 1:
                raise UserError(f"Once-for-All needs one largest op per layer; layer {i + 1} of {space.name} has "
                                f"{', '.join(mb[k].name for k in largest)}")
            skip = [k for k, o in layer.ops.items() if o.is_skip]
            for phase, ops in zip(PHASES, (largest, kernels, kernels + skip, list(layer.ops))):
                self.phase_ops[phase].append(sorted(ops))
            for k, o in layer.ops.items():
                self.cost[i, k] = -1.0 if o.is_skip else o.kernel ** 2 * o.expand

    def largest(self) -> np.ndarray:
        return np.array([ops[0] for ops in self.phase_ops["full"]])

    def smallest(self, phase: str) -> np.ndarray:
        return np.array([min(ops, key=lambda k: self.cost[i, k]) for i, ops in enumerate(self.phase_ops[phase])])

    def draw(self, phase: str, gen: torch.Generator) -> np.ndarray:
        """A uniformly drawn subnet of `phase` (per layer, one of its ops)."""
        return np.array([ops[int(torch.randint(len(ops), (), generator=gen))] for ops in self.phase_ops[phase]])

    def arch(self, idx: np.ndarray) -> Arch:
        return self.space.from_indices(idx)


def new_supernet(space: SearchSpace) -> tuple[SuperNet, Elastic]:
    net = SuperNet(space, kernel=ElasticKernel)
    return net, Elastic(net)


def _copy_bn(dst: nn.BatchNorm2d, src: nn.BatchNorm2d, c: int) -> None:
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(dst, name).copy_(getattr(src, name)[:c])
    dst.num_batches_tracked.copy_(src.num_batches_tracked)


@torch.no_grad()
def subnet(net: SuperNet, arch: Arch) -> nn.Module:
    """The standalone `build(arch)` network with the supernet's weights sliced into it: what
    `export` ships, with no supernet code at run time. Its BN statistics are the supernet's
    (a blend over every subnet trained); `recalibrate` fits them to this one."""
    out = build(arch)
    for part in ("stem", "fixed", "head", "classifier"):
        getattr(out, part).load_state_dict(getattr(net, part).state_dict())
    for layer, block, k in zip(net.layers, out.layers, arch.indices):
        op = layer.ops[int(k)]
        if op.name not in layer.shared:
            block.load_state_dict(layer.blocks[op.name].state_dict())
            continue
        sk, mid, body = layer.superkernel, layer.superkernel.cin * op.expand, list(block.body)
        if op.expand != 1 or sk.expand_e1:
            conv, bn = body.pop(0)[:2]
            conv.weight.copy_(sk.expand[:mid])
            _copy_bn(bn, sk.bn[0], mid)
        conv, bn = body.pop(0)[:2]
        conv.weight.copy_(sk.kernel(mid, op.kernel))
        _copy_bn(bn, sk.bn[1], mid)
        if op.se:
            se, sq = body.pop(0), squeeze_channels(sk.cin, op.se)
            se.reduce.weight.copy_(sk.se.reduce.weight[:sq, :mid])
            se.reduce.bias.copy_(sk.se.reduce.bias[:sq])
            se.expand.weight.copy_(sk.se.expand.weight[:mid, :sq])
            se.expand.bias.copy_(sk.se.expand.bias[:mid])
        conv, bn = body.pop(0)[:2]
        conv.weight.copy_(sk.project[:, :mid])
        _copy_bn(bn, sk.bn[2], sk.project.shape[0])
    return out


def recalibrate(model: nn.Module, data, batches: int, batch: int = 256, device="cpu") -> nn.Module:
    """Reset and re-estimate every BN's running statistics on `batches` training batches (OFA:
    a subnet's statistics are not the supernet's blend), in a fixed order."""
    loader = torch.utils.data.DataLoader(data, batch_size=batch, shuffle=False)
    update_bn(itertools.islice(loader, batches), model.to(device), device=torch.device(device))
    return model.eval()
