"""Constraints of a search: a differentiable model of a metric, a target and its multiplier.

Latency and energy come from fitted predictors; params and MFLOPs from the exact cost table, so
DCA-NAS-style budgets are the same machinery as LightNAS's latency target. Each constraint has
its own multiplier λ, learned by dual ascent: λ ← λ + η_λ (value / target - 1).

A budget (--max-params, --max-mflops) is an inequality, so its λ is kept >= 0. A target
(--target-ms, --target-mj) is an equality, as in the LightNAS paper, and its λ may go negative:
where accuracy barely depends on size (digits), a λ clipped at 0 lets the latency sink far
below the target once λ has pushed it down (measured: 3.4 ms for an 8 ms target), because
nothing pushes it back up.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch

from nasctl.errors import UserError
from nasctl.predict import Predictor, exact_cost
from nasctl.space.space import SearchSpace, load_space
from nasctl.validate import shown

_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([kKmMgG]?)\s*$")
_SCALE = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9}


def parse_count(text: str, what: str, bare: float = 1.0) -> float:
    """'2.5M' -> 2.5e6; a bare number is multiplied by `bare` (1e6 for --max-mflops, which counts
    in millions as its name says)."""
    m = _SIZE.match(str(text))
    if not m or float(m[1]) <= 0:
        raise UserError(f"{what}: expected a positive number like 2.5M or 300, got {shown(text)}")
    return float(m[1]) * (_SCALE[m[2].lower()] if m[2] else bare)


@dataclass
class Constraint:
    name: str  # the metric: latency_ms, energy_mj, params, mflops
    predictor: Predictor
    target: float
    unit: str
    hard_max: bool = False  # a budget (params, FLOPs) rather than a target to meet
    offset: float = 0.0  # calibration: measured minus predicted near the target
    lam: float = 0.0
    budget: float | None = None  # the device's budget, where --calibrate-budget searches at another target

    @property
    def goal(self) -> float:
        """What the derived net must meet: the device's budget, else the target searched for."""
        return self.budget or self.target

    def value(self, gates: torch.Tensor) -> torch.Tensor:
        """The predicted metric (plus calibration) for one L x K gate matrix, differentiably."""
        return self.predictor(gates[None])[0] + self.offset

    def predict(self, arch) -> tuple[float, float]:
        mean, std = self.predictor.predict([arch])
        return float(mean[0]) + self.offset, float(std[0])

    def ascend(self, value: float, lr: float) -> None:
        self.lam += lr * (value / self.target - 1)
        if self.hard_max:
            self.lam = max(0.0, self.lam)

    def met(self, value: float, tolerance: float) -> bool:
        return value <= self.goal * (1 + tolerance) if self.hard_max else abs(value / self.target - 1) <= tolerance


def build_constraints(
    space: SearchSpace,
    predictors: list[Predictor],
    target_ms: float | None = None,
    target_mj: float | None = None,
    max_params: str | None = None,
    max_mflops: str | None = None,
) -> list[Constraint]:
    """Match each target to the predictor of its unit; params/FLOPs are counted exactly at the
    deployment configuration (the predictors' space params, else the space's defaults)."""
    out = []
    for target, unit, flag in ((target_ms, "ms", "--target-ms"), (target_mj, "mJ", "--target-mj")):
        if target is None:
            continue
        if target <= 0:
            raise UserError(f"{flag} must be positive")
        match = [p for p in predictors if p.meta.get("unit") == unit]
        if not match:
            have = ", ".join(f"{p.metric} ({p.meta.get('unit') or 'no unit'})" for p in predictors) or "none"
            raise UserError(f"{flag} needs a --predictor of a metric in {unit} (given: {have})")
        if len(match) > 1:
            raise UserError(f"{flag}: several predictors in {unit} given; pass one")
        p = match[0]
        p.check_space(space)
        out.append(Constraint(p.metric, p, float(target), unit))
    deploy = predictors[0].space() if predictors else load_space(space.source)
    for text, what, name, bare in ((max_params, "mparams", "params", 1.0), (max_mflops, "mmacs", "mflops", 1e6)):
        if text is None:
            continue
        budget = parse_count(text, f"--max-{name}", bare) / 1e6
        out.append(Constraint(name, exact_cost(deploy, what), budget, "M", hard_max=True))
    if not out:
        raise UserError("give a target: --target-ms or --target-mj (with --predictor), or --max-params / --max-mflops")
    for c in out:
        lo, hi = reachable(space, c)
        if c.target < lo or (not c.hard_max and c.target > hi):
            raise UserError(f"{c.name} target {c.target:g} {c.unit} is outside what the space reaches "
                            f"({lo:.4g}-{hi:.4g} {c.unit} by {'count' if c.hard_max else 'the predictor'})")
    return out


def reachable(space: SearchSpace, c: Constraint, n: int = 5000, seed: int = 0) -> tuple[float, float]:
    """The range a target must lie in: exact for an additive model (the space's cheapest and
    dearest arch by its table), else the predicted range over many sampled archs."""
    from nasctl.space.sample import sample

    if c.predictor.meta.get("kind") in ("lut", "robust"):
        table = c.predictor.module.weight.detach().numpy().astype(float)
        none = np.asarray(space.ops) == space.absent
        ref = np.where(none, table, 0.0).sum(1)  # an absent edge's own term (the layered spaces have none)
        ops = space.allowed & ~none
        lo, hi = space.cost_range(np.where(ops, table, np.inf).min(1) - ref, np.where(ops, table, -np.inf).max(1) - ref)
        base = float(c.predictor.module.bias.detach()) + ref.sum() + c.offset
        return lo + base, hi + base
    mean, _ = c.predictor.predict_indices(sample(space, min(n, space.describe()["size"]), seed))
    mean = mean + c.offset
    return float(mean.min()), float(mean.max())


BUDGET_FIRST = 1e6  # a budget outweighs any target miss: a flip may give up target but never budget


def derive(start: np.ndarray, probs: np.ndarray, allowed: np.ndarray, constraints: list[Constraint], slack: float) -> np.ndarray:
    """The arch a search ends with: its argmax `start`, or, where that is predicted to miss a
    target by more than `slack` or to exceed a budget (the device's, where a calibrated search ran
    at another), the nearest fix by single-layer flips, each the most probable one that removes
    the miss or else the one that shrinks it most per unit of log-probability given up.

    Why: the multiplier meets the target *on average over the sampled paths*, and the argmax is
    not their average; it lands 3-5% off (measured in issue 5 and in the quickstart) until α is
    peaked, which a short search never reaches.
    """
    logp = np.where(allowed, np.log(np.clip(probs, 1e-12, None)), -np.inf)

    def miss(idx: np.ndarray) -> np.ndarray:
        total = np.zeros(len(idx))
        for c in constraints:
            r = c.predictor.predict_indices(idx)[0] + c.offset
            r = r / c.goal - 1
            total += BUDGET_FIRST * np.maximum(0.0, r) if c.hard_max else np.maximum(0.0, np.abs(r) - slack)
        return total

    idx = np.asarray(start).copy()
    L = len(idx)
    layer, op = np.nonzero(allowed)
    now = miss(idx[None])[0]
    for _ in range(L):
        if now == 0:
            break
        keep = op != idx[layer]
        cand = np.repeat(idx[None], keep.sum(), 0)
        cand[np.arange(len(cand)), layer[keep]] = op[keep]
        after = miss(cand)
        cost = np.maximum(logp[layer[keep], idx[layer[keep]]] - logp[layer[keep], op[keep]], 0.0)
        better = after < now - 1e-12
        if not better.any():
            break
        met = better & (after == 0)
        j = np.flatnonzero(met)[cost[met].argmin()] if met.any() else int(np.where(better, (now - after) / (cost + 1e-3), -np.inf).argmax())
        idx, now = cand[j], after[j]
    return idx
