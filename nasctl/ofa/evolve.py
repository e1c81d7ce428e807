"""Once-for-All's search: per (device, target), a regularized evolution scored by an accuracy
predictor under hard constraints, then the winner's weights cut out of the supernet.

No network is trained or run while searching: fitness is the accuracy predictor's top-1, and
feasibility is each constraint's predictor, all evaluated on whole generations at once. That is
why a target costs seconds, where a LightNAS search costs a supernet training.

A latency or energy target T is met when the prediction lies within ±band of T (a third of the
tolerance, as `search` derives: the rest is left for the predictor's error on the device); a
--max-params / --max-mflops budget is a maximum, counted exactly. Regularized evolution (Real
et al. 2019): each generation, tournaments of the living population pick parents, children are
mutated or crossed over through the space's allowed ops only, infeasible ones are dropped, and
the oldest die, so no early lucky arch rules the population for good.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from nasctl.errors import UserError
from nasctl.figures import png, pyplot
from nasctl.predict import Predictor
from nasctl.search.baselines import feasible
from nasctl.search.constraints import Constraint, build_constraints
from nasctl.space.space import SearchSpace


@dataclass(frozen=True)
class Evolution:
    population: int = 100
    generations: int = 40
    children: int = 50  # per generation; as many of the oldest die
    tournament: int = 10
    mutate_p: float = 0.15  # per-layer chance of a new op in a mutated child
    crossover: float = 0.5  # share of children made by crossing two parents
    seed: int = 0

    def __post_init__(self):
        if self.population < 2 or self.generations < 1 or self.children < 1 or not 1 <= self.tournament <= self.population:
            raise UserError("--population must be >= 2, --generations >= 1, and --tournament between 1 and the population")


@dataclass
class Goal:
    """One (device, target) pair: its constraints (the target's, then any budgets)."""

    device: str  # the predictor's name: its file stem
    constraints: list[Constraint]

    @property
    def target(self) -> Constraint:
        return self.constraints[0]

    @property
    def name(self) -> str:
        c = self.target
        return f"{self.device}-{c.target:g}{c.unit}"


def check_accuracy(acc: Predictor, space: SearchSpace) -> None:
    """The accuracy predictor must score the supernet's archs: same layers and ops, an accuracy metric."""
    if acc.metric not in ("top1", "top5", "accuracy", "val_acc"):
        raise UserError(f"--accuracy: the predictor is of {acc.metric}, not of top-1 (fit it on `nasctl supernet eval` rows "
                        "with --metric top1)")
    acc.check_space(space)


def goals(space: SearchSpace, predictors: dict[str, Predictor], targets: dict[str, dict[str, tuple[float, ...]]],
          max_params: str | None, max_mflops: str | None) -> list[Goal]:
    """Every (device, target) pair: each predictor with the targets of its unit (`targets[unit]`,
    keyed by device name, or "" for every device of that unit). A target out of a predictor's
    reach is refused here, before any work."""
    for unit, by in targets.items():
        for name in by:
            if name and name not in predictors:
                raise UserError(f"--target-{unit.lower()} {name}=...: no --predictor is named {name} (given: {', '.join(predictors)})")
    out = []
    for name, p in predictors.items():
        unit = p.meta.get("unit")
        if unit not in ("ms", "mJ"):
            raise UserError(f"--predictor {name}: {p.metric} is in {unit or 'no unit'}; OFA targets latency (ms) or energy (mJ)")
        by = targets.get(unit, {})
        ts = by.get(name, by.get("", ()))
        if not ts:
            raise UserError(f"--predictor {name} is in {unit}: give --target-{unit.lower()} (for every device, or {name}=T1,T2)")
        for t in ts:
            kw = {"target_ms": t} if unit == "ms" else {"target_mj": t}
            try:
                out.append(Goal(name, build_constraints(space, [p], max_params=max_params, max_mflops=max_mflops, **kw)))
            except UserError as e:
                raise UserError(f"--predictor {name}: {e}") from None
    return out


def evolve(space: SearchSpace, goal: Goal, acc: Predictor, evo: Evolution, band: float) -> dict:
    """The best arch found for `goal`, with every feasible arch evaluated (`history`, for the
    Pareto plot) and the wall time."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(evo.seed)
    cons = goal.constraints

    def ok(idx: np.ndarray) -> np.ndarray:
        return feasible(cons, idx, band) if len(idx) else np.zeros(0, bool)

    try:
        pop = _start(space, ok, evo.population, rng)
    except UserError as e:
        raise UserError(f"{goal.name}: {e}") from None
    fit = acc.predict_indices(pop)[0]
    seen = {r.tobytes() for r in pop}
    hist_idx, hist_fit = [pop], [fit]
    for _ in range(evo.generations):
        k = evo.children * 4  # draw spares: some children are infeasible or already seen
        entrants = rng.integers(len(pop), size=(k, 2, evo.tournament))
        parents = pop[np.take_along_axis(entrants, fit[entrants].argmax(-1)[..., None], -1)[..., 0]]  # (k, 2) winners
        cross = rng.random(k) < evo.crossover
        child = np.where(cross[:, None] & (rng.random(parents[:, 0].shape) < 0.5), parents[:, 1], parents[:, 0])
        child = _mutate(space, child, np.where(cross, evo.mutate_p / 2, evo.mutate_p), rng)
        child = child[ok(child)]
        fresh = [i for i, r in enumerate(child) if not (r.tobytes() in seen or seen.add(r.tobytes()))][: evo.children]
        if not fresh:
            continue
        child = child[fresh]
        cfit = acc.predict_indices(child)[0]
        pop, fit = np.concatenate([pop, child])[len(child):], np.concatenate([fit, cfit])[len(child):]  # the oldest die
        hist_idx.append(child)
        hist_fit.append(cfit)
    idx, score = np.concatenate(hist_idx), np.concatenate(hist_fit)
    best = idx[int(score.argmax())]
    return {"indices": best, "top1": float(score.max()), "history": idx, "history_top1": score,
            "evaluated": len(idx), "wall_s": time.perf_counter() - t0}


def _start(space: SearchSpace, ok, n: int, rng: np.random.Generator, draws: int = 50000) -> np.ndarray:
    """n distinct feasible archs from `draws` uniform ones, drawn in one batch (`sample` draws
    one at a time, which took 2.6 s of a 2.7 s search)."""
    idx = np.unique(space.draw(np.zeros((draws,) + space.allowed.shape), rng), axis=0)
    idx = idx[ok(idx)]
    if not len(idx):
        raise UserError(f"none of {draws} sampled archs meets the target and budgets together; loosen a budget or move the target")
    return idx[rng.permutation(len(idx))[:n]]


def _mutate(space: SearchSpace, idx: np.ndarray, p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each layer, with chance p (per row), takes a uniformly drawn allowed op of that layer."""
    new = space.draw(np.zeros((len(idx),) + space.allowed.shape), rng)
    return np.where(rng.random(idx.shape) < p[:, None], new, idx)


def pareto_png(device: str, unit: str, cloud: tuple[np.ndarray, np.ndarray], chosen: list[dict]) -> bytes:
    """Predicted top-1 against the device's predicted metric (as fitted, before any calibration
    shift): every arch the searches scored (grey), their upper-left front, each target's chosen
    net, and where a verify measured it."""
    plt = pyplot()
    x, y = cloud
    order = np.argsort(x)
    front = np.maximum.accumulate(y[order])
    keep = np.r_[True, front[1:] > front[:-1]]
    fig, ax = plt.subplots(figsize=(7, 4.8))
    ax.scatter(x, y, s=4, c="0.75", label=f"archs scored ({len(x)})")
    ax.step(x[order][keep], front[keep], where="post", color="k", lw=1, label="front of the scored archs")
    for k, c in enumerate(chosen):
        ax.axvline(c["target"], color=f"C{k}", ls="--", lw=1)
        ax.plot(c["predicted"], c["top1"], "o", color=f"C{k}", ms=8, label=f"target {c['target']:g} {unit}: chosen")
        if c.get("measured") is not None:
            ax.plot(c["measured"], c["top1"], "x", color=f"C{k}", ms=9, label=f"measured {c['measured']:.4g} {unit}")
    ax.set_xlabel(f"predicted {'latency' if unit == 'ms' else 'energy'} on {device} ({unit})")
    ax.set_ylabel("predicted top-1 (inherited weights, held-out split)")
    ax.set_title(f"Once-for-All on {device}", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return png(fig)
