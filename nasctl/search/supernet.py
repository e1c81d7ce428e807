"""The supernet over any space, and the ways of turning α into per-layer gates.

Every searchable layer holds one superkernel for its plain MBConv ops (their weights nested:
kernels centred, expansions as leading channels) and a block per other op (skip, grouped convs;
built by `make_block`, as the standalone net is), and is driven by an L x K gate matrix:

- single-path (LightNAS, ProxylessNAS): each gate row is a hard one-hot; only the chosen block
  runs and its output is scaled by the gate, whose value is 1 but whose gradient is the
  straight-through one. Memory and time are those of one network.
- multi-path (FBNet): every allowed block runs and the outputs are summed with soft weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nasctl.models.builder import Macro, SqueezeExcite, make_block, squeeze_channels
from nasctl.space.space import LayerSpec, Op, SearchSpace, parse_op


class SuperKernel(nn.Module):
    """All MBConv ops of a layer in one set of weights, sliced per op (OFA, Single-Path NAS): a
    kK kernel is the centre of the largest kernel and the eE channels are the first cin*E of
    the widest expansion, each BN sliced alike; an SE of R% is the first squeeze channels of the
    largest SE.

    Why: with a separate block per op, the channels a layer hands on mean something different
    for every op drawn, and a single-path supernet learns nothing in a few hundred steps
    (measured on digits: chance accuracy after 30 epochs). Shared slices keep their meaning.
    """

    def __init__(self, space: SearchSpace, layer: LayerSpec, ops: list[Op]):
        super().__init__()
        self.cin, self.stride = layer.in_ch, layer.stride
        self.kmax, mid = max(o.kernel for o in ops), layer.in_ch * max(o.expand for o in ops)
        self.expand = nn.Parameter(torch.empty(mid, layer.in_ch, 1, 1)) if any(o.expand != 1 or space.expand_e1 for o in ops) else None
        self.depthwise = nn.Parameter(torch.empty(mid, 1, self.kmax, self.kmax))
        self.project = nn.Parameter(torch.empty(layer.out_ch, mid, 1, 1))
        for w in (self.expand, self.depthwise, self.project):
            if w is not None:
                nn.init.kaiming_uniform_(w, a=5 ** 0.5)  # nn.Conv2d's own init
        self.bn = nn.ModuleList(nn.BatchNorm2d(c) for c in (mid, mid, layer.out_ch))
        self.act = nn.ReLU6() if space.activation == "relu6" else nn.ReLU()
        self.expand_e1 = space.expand_e1
        self.residual = layer.stride == 1 and layer.in_ch == layer.out_ch
        se = max(o.se for o in ops)
        self.se = SqueezeExcite(mid, squeeze_channels(self.cin, se)) if se else None

    def excite(self, y: torch.Tensor, squeeze: int, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The SE of the first `squeeze` channels over y's channels (`mask`: per squeeze channel).
        SqueezeExcite's formula on sliced weights; it stays apart because the cost counter hooks
        SqueezeExcite's own convs, which a shared function on weights would bypass."""
        c, r, e = y.shape[1], self.se.reduce, self.se.expand
        z = F.relu(F.conv2d(y.mean((2, 3), keepdim=True), r.weight[:squeeze, :c], r.bias[:squeeze]))
        if mask is not None:
            z = z * mask[:, None, None]
        return y * torch.sigmoid(F.conv2d(z, e.weight[:c, :squeeze], e.bias[:c]))

    @staticmethod
    def _bn(bn: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]  # slices of the running stats are views: updates land in the buffers
        return F.batch_norm(x, bn.running_mean[:c], bn.running_var[:c], bn.weight[:c], bn.bias[:c],
                            bn.training, bn.momentum, bn.eps)

    def kernel(self, mid: int, k: int) -> torch.Tensor:
        """The depthwise weights of a kK op on `mid` channels: the centre of the largest kernel."""
        c = (self.kmax - k) // 2
        return self.depthwise[:mid, :, c:c + k, c:c + k]

    def forward(self, x: torch.Tensor, op: Op) -> torch.Tensor:
        mid, k = self.cin * op.expand, op.kernel
        y = x
        if op.expand != 1 or self.expand_e1:
            y = self.act(self._bn(self.bn[0], F.conv2d(y, self.expand[:mid])))
        y = self.act(self._bn(self.bn[1], F.conv2d(y, self.kernel(mid, k), None, self.stride, k // 2, 1, mid)))
        if op.se:
            y = self.excite(y, squeeze_channels(self.cin, op.se))
        y = self._bn(self.bn[2], F.conv2d(y, self.project[:, :mid]))
        return x + y if self.residual else y


class MixedLayer(nn.Module):
    """One searchable layer: a shared superkernel for its plain MBConv ops (or a block per op
    with `shared=False`), and its own block for anything else (skip, grouped convs)."""

    def __init__(self, space: SearchSpace, layer: LayerSpec, shared: bool = True, kernel: type[SuperKernel] = SuperKernel):
        super().__init__()
        ops = [parse_op(o) for o in layer.ops]
        share = [o for o in ops if shared and not o.is_skip and o.groups == 1]
        self.ops = {space.ops.index(o.name): o for o in ops}
        self.superkernel = kernel(space, layer, share) if share else None
        self.shared = {o.name for o in share}
        self.blocks = nn.ModuleDict({o.name: make_block(space, layer.in_ch, layer.out_ch, layer.stride, o.name)
                                     for o in ops if o.name not in self.shared})

    def run(self, x: torch.Tensor, k: int) -> torch.Tensor:
        op = self.ops[k]
        return self.superkernel(x, op) if op.name in self.shared else self.blocks[op.name](x)

    def forward(self, x: torch.Tensor, gate: torch.Tensor, mode: str) -> torch.Tensor:
        if mode == "multi":
            return sum(gate[k] * self.run(x, k) for k in self.ops)
        if mode == "threshold":
            return self.decisions.forward(x, gate)  # set by `singlepath.SinglePathSearcher`
        k = int(gate.argmax())
        return gate[k] * self.run(x, k)


class SuperNet(Macro):
    def __init__(self, space: SearchSpace, shared: bool = True, kernel: type[SuperKernel] = SuperKernel):
        super().__init__(space)
        self.space = space
        self.layers = nn.ModuleList(MixedLayer(space, l, shared, kernel) for l in space.layers)

    def forward(self, x: torch.Tensor, gates: torch.Tensor, mode: str = "single") -> torch.Tensor:
        """`gates` per layer: a one-hot that picks one path ("single"), soft weights over all
        paths ("multi"), or Single-Path NAS thresholds on the superkernel ("threshold")."""
        x = self.fixed(self.stem(x))
        for layer, gate in zip(self.layers, gates):
            x = layer(x, gate, mode)
        return self.classify(x)


def path_gates(space: SearchSpace, idx, device) -> torch.Tensor:
    """The one-hot gate rows that run the whole arch `idx` ((L,) op indices) as one path."""
    return F.one_hot(torch.as_tensor(idx, device=device), space.allowed.shape[1]).float()


def masked(alpha: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """α with the ops a layer may not take at -inf, so no relaxation ever picks them."""
    return alpha.masked_fill(~allowed, float("-inf"))


def gumbel(shape, generator: torch.Generator | None, device) -> torch.Tensor:
    u = torch.rand(shape, generator=generator, device="cpu").clamp_(1e-10, 1 - 1e-10).to(device)
    return -torch.log(-torch.log(u))


def gumbel_hard(alpha: torch.Tensor, allowed: torch.Tensor, tau: float, generator=None) -> torch.Tensor:
    """Gumbel-softmax over softmax(α / τ): the hard argmax one-hot forward, the soft sample's
    gradient backward (straight-through).

    τ divides the logits, not the noised sum, so it sets where samples land: at τ = 5 they
    explore well beyond softmax(α); as τ decays they close in on argmax α, the arch the search
    returns, so the learned λ ends up acting on that arch. (Dividing the noised sum changes the
    gradient only: a few hundred α steps on small data leave α flat, and samples from softmax(α)
    then scatter ±10% around the target while the argmax sits elsewhere; measured on digits.)
    """
    logp = F.log_softmax(masked(alpha, allowed) / tau, -1)
    soft = F.softmax(logp + gumbel(alpha.shape, generator, alpha.device), -1)
    hard = F.one_hot(soft.argmax(-1), alpha.shape[-1]).to(soft.dtype)
    return hard - soft.detach() + soft


def gumbel_soft(alpha: torch.Tensor, allowed: torch.Tensor, tau: float, generator=None) -> torch.Tensor:
    """FBNet's relaxation: soft Gumbel-softmax weights for a weighted sum of all paths."""
    logp = F.log_softmax(masked(alpha, allowed), -1)
    return F.softmax((logp + gumbel(alpha.shape, generator, alpha.device)) / tau, -1)


def binarized(alpha: torch.Tensor, allowed: torch.Tensor, generator=None) -> torch.Tensor:
    """ProxylessNAS's binary gates: one path sampled from p = softmax(α); the gradient reaches
    α through p (the estimator dL/dα_i = Σ_j dL/dg_j p_j (δ_ij - p_i), with one path active).
    """
    p = F.softmax(masked(alpha, allowed), -1)
    idx = torch.multinomial(p.detach().cpu().float(), 1, generator=generator).squeeze(-1).to(alpha.device)
    hard = F.one_hot(idx, alpha.shape[-1]).to(p.dtype)
    return hard - p.detach() + p


def probabilities(alpha: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    return F.softmax(masked(alpha, allowed), -1)
