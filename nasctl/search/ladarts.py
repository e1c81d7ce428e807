"""LA-DARTS (latency-aware DARTS) in the darts cell space.

- Supernet: DARTS's continuous relaxation. Every edge of every cell is the softmax(α)-weighted sum
  of its ops, built by the same `make_op` as the standalone net; `none` adds nothing. α is
  28 x 8: the normal cell's 14 edges, then the reduction cell's. First-order bi-level steps:
  w on one half of the data, α on the other (the engine's loop).
- LAT(α): M genotypes drawn from softmax(α) (per node 2 inputs, each edge weighted by the share
  it does not give to `none`, then a non-none op), each predicted by the latency predictor (the
  LPM), averaged; the forward uses the drawn one-hots, the backward softmax(α)'s gradient
  (straight-through).
- Loss: L_val + λ·LAT/T with the user's fixed `--lambda` (the paper's L_val + λ·LAT, with LAT in
  units of the target T so that one λ means the same on any device), or, without it, the
  learned λ of lightnas, so one search can hit a target.
- `--max-params` / `--max-mflops`: DCA-NAS's constraint k_s(α), the softmax-weighted sum of the
  exact per-op costs over all edges and cells, with a trainable multiplier (λ >= 0).
- Derivation: DARTS's rule. Per node the 2 inputs whose strongest non-none op weighs most, each
  with that op.
"""

from __future__ import annotations

import torch
from torch import nn

from nasctl.models.cells import CellInputs, make_op
from nasctl.search.engine import SearchConfig, Searcher, SearchState
from nasctl.space.cells import EDGES, NODES, NONE, CellSpace, node_edges
from nasctl.space.space import Arch

SAMPLES = 8  # M


class MixedCell(nn.Module):
    def __init__(self, spec: dict, ops: tuple[str, ...]):
        super().__init__()
        c = spec["C"]
        self.pre = CellInputs(spec)
        self.ops = [k for k, op in enumerate(ops) if op != NONE]
        self.edges = nn.ModuleList(
            nn.ModuleList(make_op(ops[k], c, 2 if spec["reduce"] and inp < 2 else 1) for k in self.ops) for _, inp in EDGES
        )

    def forward(self, s0, s1, weights: torch.Tensor):
        states = self.pre(s0, s1)
        e = 0
        for node in range(NODES):
            total = 0
            for inp in range(node + 2):
                total = total + sum(weights[e, k] * m(states[inp]) for k, m in zip(self.ops, self.edges[e]))
                e += 1
            states.append(total)
        return torch.cat(states[2:], 1)


class CellSuperNet(nn.Module):
    """The stacked-cell network of `CellNet` with every edge mixed."""

    def __init__(self, space: CellSpace):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, space.stem_channels, 3, 1, 1, bias=False), nn.BatchNorm2d(space.stem_channels))
        self.cells = nn.ModuleList(MixedCell(spec, space.ops) for spec in space.cells)
        self.reduce = [spec["reduce"] for spec in space.cells]
        self.classifier = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(space.out_channels, space.params.num_classes))

    def forward(self, x: torch.Tensor, gates: torch.Tensor, mode: str = "multi") -> torch.Tensor:
        half = len(EDGES)
        s0 = s1 = self.stem(x)
        for cell, reduce in zip(self.cells, self.reduce):
            s0, s1 = s1, cell(s0, s1, gates[half:] if reduce else gates[:half])
        return self.classifier(s1)


def sample_genotypes(p: torch.Tensor, none: int, m: int, generator: torch.Generator) -> torch.Tensor:
    """(m, 28, K) one-hots of valid genotypes drawn from the op shares `p` (28 x K)."""
    pc = p.detach().float().cpu()
    out = torch.zeros((m,) + tuple(pc.shape))
    ops = pc.clone()
    ops[:, none] = 0
    for i in range(m):
        for c in range(2):
            for node in range(NODES):
                e = torch.tensor(node_edges(c, node))
                keep = (1 - pc[e, none]).clamp_min(1e-6)
                chosen = e[torch.multinomial(keep, 2, replacement=False, generator=generator)]
                out[i, e, none] = 1
                out[i, chosen, none] = 0
                out[i, chosen, torch.multinomial(ops[chosen] + 1e-12, 1, generator=generator).squeeze(-1)] = 1
    return out.to(p.device, p.dtype)


def derive(p, space: CellSpace) -> Arch:
    """DARTS's rule: per node the 2 inputs with the strongest non-none op, each with that op."""
    none = space.none_index
    strength = p.clone()
    strength[:, none] = -1
    best_w, best_op = strength.max(-1)
    idx = torch.full((space.num_layers,), none)
    for c in range(2):
        for node in range(NODES):
            e = torch.tensor(node_edges(c, node))
            top = e[best_w[e].topk(2).indices]
            idx[top] = best_op[top]
    return space.from_indices(idx.numpy())


class LADartsState(SearchState):
    def arch(self) -> Arch:
        return derive(torch.as_tensor(self.probabilities()), self.space)


class LADartsSearcher(Searcher):
    """`Searcher` on the cell supernet, with the sampled-genotype latency term."""

    State = LADartsState

    def new_net(self, space: CellSpace) -> nn.Module:
        return CellSuperNet(space)

    def gates(self, tau: float) -> tuple[torch.Tensor, str]:
        return torch.softmax(self.state.alpha, -1), "multi"

    def cost_term(self, gates: torch.Tensor) -> tuple[torch.Tensor, dict]:
        s, cfg = self.state, self.state.cfg
        hard = sample_genotypes(gates, s.space.none_index, SAMPLES, self.gen)
        st = hard - gates.detach() + gates  # the drawn genotypes forward, softmax(α)'s gradient back
        term = torch.zeros((), device=self.device)
        values = {}
        for c in s.constraints:
            # A params/FLOPs budget is DCA-NAS's k_s(α): the softmax-weighted per-op costs, summed
            # over every edge and cell (exact per op), under the same trainable multiplier.
            v = c.predictor(gates[None])[0] + c.offset if c.hard_max else (c.predictor(st) + c.offset).mean()
            if cfg.learned_lambda:
                r = v / c.target - 1
                quad = r.clamp_min(0) if c.hard_max else r
                term = term + c.lam * r + 0.5 * cfg.rho * quad**2
            else:
                term = term + cfg.lam * v / c.target
            values[c.name] = float(v.detach())
        return term, values


def check_space(space, cfg: SearchConfig) -> None:
    """la-darts searches cells, and only la-darts does; NAS-Bench-201's cells no supernet here."""
    from nasctl.errors import UserError
    from nasctl.space.nb201 import Nb201Space

    if isinstance(space, Nb201Space):
        raise UserError(f"--method {cfg.method} trains a supernet of layers (or DARTS cells for la-darts): space {space.name!r} "
                        "is NAS-Bench-201's cell space, whose nets are fitted, predicted and profiled, not searched by a supernet")
    if (cfg.method == "la-darts") != isinstance(space, CellSpace):
        raise UserError(f"--method la-darts searches a cell space (--space darts); space {space.name!r} is searched by "
                        "lightnas, singlepath or a baseline" if cfg.method == "la-darts" else
                        f"space {space.name!r} is a cell space: search it with --method la-darts")
