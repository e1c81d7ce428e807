"""Single-Path NAS (Stamoulis et al. 2019): one superkernel per layer, decided by thresholds.

The superkernel (`SuperKernel`) already nests the ops: kK is the centre of the largest kernel and
eE the first cin*E channels of the widest expansion. Here each nested increment (the ring from
k3 to k5, k5 to k7; the channels from e3 to e6; the e3 channels themselves) is kept or dropped
by an indicator 1(‖w_group‖² > t) of its weights' group-Lasso norm against a learned threshold
t: hard in the forward pass, a sigmoid in the backward one (straight-through). Dropping the
e3 channels drops the block: the skip op, where the layer is a residual one. Where the space
also has SE ratios (e.g. `proxyless-se`), each increment of the squeeze kernel's channels (0 to
25%, 25 to 50%) is decided the same way (the paper's eqs. 15-17). There is no α: the
thresholds are trained with the weights, one level, on the same batches.

The indicators also give each layer's op as a one-hot row (products of the nested indicators,
the paper's eqs. 12-13), so the runtime R is any predictor of the space: with the LUT it is the
paper's per-layer sum. The cost is λ log R with a fixed λ (the paper), or, without `--lambda`,
LightNAS's learned λ, so that one search lands on a target.

Norms are compared on a log scale, ln(mean w²) - t, so one threshold step means the same at
every layer; thresholds start 1 below the initial norms, so the search starts from the largest op
and prunes, as in the paper.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from nasctl.errors import UserError
from nasctl.models.builder import squeeze_channels
from nasctl.search.engine import SearchConfig, Searcher, SearchState
from nasctl.search.supernet import MixedLayer, SuperKernel, SuperNet
from nasctl.space.space import Arch, SearchSpace


@dataclass(frozen=True)
class Grid:
    """A layer's ops as a nested kernel x expansion x SE-ratio grid (+ skip), with their op indices."""

    kernels: tuple[int, ...]
    expands: tuple[int, ...]
    ses: tuple[int, ...]  # (0,) where the space has no SE
    index: dict  # (kernel, expand, se) -> op index in the space
    skip: int | None  # op index of skip, where the layer may take it

    @property
    def thresholds(self) -> int:
        return len(self.kernels) - 1 + len(self.expands) - 1 + len(self.ses) - 1 + 1  # + the on/off (skip) one


def grid_of(layer: MixedLayer, i: int) -> Grid:
    ops = layer.ops
    mb = {k: o for k, o in ops.items() if not o.is_skip}
    skips = [k for k, o in ops.items() if o.is_skip]
    kernels, expands, ses = (tuple(sorted({getattr(o, a) for o in mb.values()})) for a in ("kernel", "expand", "se"))
    index = {(o.kernel, o.expand, o.se): k for k, o in mb.items()}
    sk = layer.superkernel
    if (sk is None or set(layer.shared) != {o.name for o in mb.values()} or len(index) != len(kernels) * len(expands) * len(ses)
            or (skips and not sk.residual)):
        raise UserError(f"--method singlepath needs every searchable layer's ops to be a full kernel x expansion "
                        f"(x SE ratio) grid of plain MBConvs, plus skip only where the block is residual; layer {i + 1} "
                        f"has {', '.join(o.name for o in ops.values())}")
    return Grid(kernels, expands, ses, index, skips[0] if skips else None)


def st_indicator(d: torch.Tensor) -> torch.Tensor:
    """1(d > 0) forward, sigmoid(d)'s gradient backward."""
    soft = torch.sigmoid(d)
    return (d > 0).to(soft.dtype) + soft - soft.detach()


class Decisions:
    """The per-layer groups of a superkernel and the indicators that keep or drop them."""

    def __init__(self, sk: SuperKernel, grid: Grid):
        self.sk, self.grid = sk, grid
        km = sk.kmax
        sq = lambda k: F.pad(torch.ones(k, k), [(km - k) // 2] * 4)  # noqa: E731
        dev = sk.depthwise.device
        self.core = sq(grid.kernels[0]).to(dev)
        self.rings = [(sq(b) - sq(a)).to(dev) for a, b in zip(grid.kernels, grid.kernels[1:])]
        bounds = [sk.cin * e for e in grid.expands]
        self.groups = [(0, bounds[0])] + list(zip(bounds, bounds[1:]))
        squeeze = [squeeze_channels(sk.cin, r) if r else 0 for r in grid.ses]
        self.squeeze = list(zip(squeeze, squeeze[1:]))  # the SE increments; [0, squeeze[0]) is always kept

    def log_norms(self) -> torch.Tensor:
        """ln(mean w²) of each kernel ring, the channel increments, the SE increments (of the
        squeeze kernel), then the e3 channels (the on/off one)."""
        w = self.sk.depthwise
        rings = [torch.log((w[:, 0] ** 2 * r).sum() / (r.sum() * w.shape[0]) + 1e-12) for r in self.rings]
        groups = [torch.log((w[a:b] ** 2).mean() + 1e-12) for a, b in self.groups]
        se = [torch.log((self.sk.se.reduce.weight[a:b] ** 2).mean() + 1e-12) for a, b in self.squeeze]
        return torch.stack(rings + groups[1:] + se + groups[:1])

    def indicators(self, t: torch.Tensor, soft: bool = False) -> tuple[list, list, list, torch.Tensor]:
        """Kernel-ring, channel-group, SE and on/off indicators for thresholds t (or their sigmoids)."""
        n = self.log_norms()
        g = (torch.sigmoid if soft else st_indicator)(n - t[: len(n)])
        nk, nc = len(self.rings), len(self.groups) - 1
        on = g[-1] if self.grid.skip is not None else torch.ones((), device=g.device)
        return list(g[:nk]), list(g[nk:nk + nc]), list(g[nk + nc:-1]), on

    @staticmethod
    def _levels(ind: list) -> list:
        """P(level j) for nested indicators: all up to j on, the next off."""
        out, keep = [], 1.0
        for j in range(len(ind) + 1):
            out.append(keep * (1 - ind[j]) if j < len(ind) else keep)
            if j < len(ind):
                keep = keep * ind[j]
        return out

    @staticmethod
    def _mask(first: int, groups: list, ind: list, device) -> torch.Tensor:
        """Per channel: 1 for the first ones, then each nested group's running product of indicators."""
        parts, keep = [torch.ones(first, device=device)], 1.0
        for g, (a, b) in zip(ind, groups):
            keep = keep * g
            parts.append(keep * torch.ones(b - a, device=device))
        return torch.cat(parts)

    def onehot(self, t: torch.Tensor, K: int, soft: bool = False) -> torch.Tensor:
        """The layer's op as a K-row: exactly one-hot forward, differentiable backward (with
        `soft`, the shares the sigmoids give each op instead)."""
        kr, ch, se, on = self.indicators(t, soft)
        row = torch.zeros(K, device=t.device, dtype=t.dtype)
        g = self.grid
        for a, pk in zip(g.kernels, self._levels(kr)):
            for b, pe in zip(g.expands, self._levels(ch)):
                for r, ps in zip(g.ses, self._levels(se)):
                    row = row + F.one_hot(torch.tensor(g.index[(a, b, r)], device=t.device), K) * (on * pk * pe * ps)
        if g.skip is not None:
            row = row + F.one_hot(torch.tensor(g.skip, device=t.device), K) * (1 - on)
        return row

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The superkernel with its dropped groups zeroed: one network's memory and time."""
        sk = self.sk
        kr, ch, se, on = self.indicators(t)
        kmask, keep = self.core, 1.0
        for g, ring in zip(kr, self.rings):
            keep = keep * g
            kmask = kmask + keep * ring
        y = x
        if sk.expand is not None:
            y = sk.act(sk._bn(sk.bn[0], F.conv2d(y, sk.expand)))
        y = sk.act(sk._bn(sk.bn[1], F.conv2d(y, sk.depthwise * kmask, None, sk.stride, sk.kmax // 2, 1, sk.depthwise.shape[0])))
        y = y * self._mask(self.groups[0][1], self.groups[1:], ch, x.device)[:, None, None]
        if sk.se is not None:
            smask = self._mask(self.squeeze[0][0] if self.squeeze else sk.se.reduce.out_channels, self.squeeze, se, x.device)
            excited = sk.excite(y, len(smask), smask)
            y = excited if self.grid.ses[0] else y + se[0] * (excited - y)  # with 0 in the grid, SE itself is a decision
        y = sk._bn(sk.bn[2], F.conv2d(y, sk.project))
        return x + on * y if sk.residual else y


class SinglePathState(SearchState):
    """α is the L x (thresholds) matrix; the arch is what the hard indicators say."""

    def _rows(self, soft: bool = False) -> torch.Tensor:
        with torch.no_grad():
            return torch.stack([layer.decisions.onehot(t, len(self.space.ops), soft)
                                for layer, t in zip(self.net.layers, self.alpha)])

    def arch(self) -> Arch:
        return self.space.from_indices(self._rows().argmax(-1).cpu().numpy())

    def probabilities(self) -> np.ndarray:
        """Soft op shares from the sigmoids of the same indicators (for arch.json)."""
        return self._rows(soft=True).cpu().numpy()


class SinglePathSearcher(Searcher):
    """`Searcher` with thresholds for α, trained with w on both halves of the data."""

    State = SinglePathState

    def new_alpha(self, space: SearchSpace, net: SuperNet) -> torch.Tensor:
        grids = [grid_of(layer, i) for i, layer in enumerate(net.layers)]
        t = torch.zeros(len(grids), max(g.thresholds for g in grids))
        for i, (layer, grid) in enumerate(zip(net.layers, grids)):
            layer.decisions = Decisions(layer.superkernel, grid)
            with torch.no_grad():
                n = layer.decisions.log_norms()
            t[i, : len(n)] = n - 1.0
        return t

    def alpha_decay(self, cfg: SearchConfig) -> float:
        return 0.0  # a threshold has no natural zero to decay towards

    def gates(self, tau: float) -> tuple[torch.Tensor, str]:
        return self.state.alpha.detach(), "threshold"  # the w-only step; `_joint` uses α itself

    def matrix(self) -> torch.Tensor:
        """The L x K one-hot of the current decisions, differentiable in thresholds and weights."""
        s = self.state
        return torch.stack([layer.decisions.onehot(t, len(s.space.ops)) for layer, t in zip(s.net.layers, s.alpha)])

    def _w_step(self, x, y, tau: float, search_alpha: bool) -> float:
        if not search_alpha:  # warm-up: thresholds frozen, the weights of the largest op learn
            return super()._w_step(x, y, tau, search_alpha)
        return float(self._joint(x, y, True)[2].detach())

    def _alpha_step(self, x, y, tau: float, train_w: bool) -> dict:
        return self._ascend(*self._joint(x, y, train_w))  # λ ascends once per pair of steps, as in lightnas

    def _joint(self, x, y, train_w: bool) -> tuple:
        """One level: CE + cost, stepping the thresholds and (unless calibrating) the weights."""
        s = self.state
        self.ddp.train()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            out = self.ddp(x, s.alpha, "threshold")
            ce = F.cross_entropy(out, y)
        term, values = self.cost_term(self.matrix())
        self.w_opt.zero_grad(set_to_none=True)
        self.a_opt.zero_grad(set_to_none=True)
        (ce + term).backward()
        if self.world > 1:
            dist.all_reduce(s.alpha.grad)
            s.alpha.grad /= self.world
        if train_w:
            self.w_opt.step()
        self.a_opt.step()
        return out, y, ce, values
