"""Search baselines that pick among whole archs instead of moving α: `random` and `evolution`.

Both use the same predictors, data split and supernet macro as the gradient methods, and the
same training budget (weight-training steps), so their accuracy at the target compares fairly.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from nasctl.errors import UserError
from nasctl.models import build
from nasctl.search.constraints import Constraint
from nasctl.search.engine import Searcher
from nasctl.search.supernet import path_gates
from nasctl.space.sample import sample
from nasctl.space.space import Arch, SearchSpace
from nasctl.train.loop import layout, lr_factor, param_groups

RANDOM_BAND = 0.02  # random keeps archs predicted within ±2% of each target


def feasible(constraints: list[Constraint], idx: np.ndarray, band: float | None) -> np.ndarray:
    """Mask of archs that meet every constraint: budgets as maxima; targets within ±band of T,
    or at most T when band is None (OFA's hard latency constraint)."""
    ok = np.ones(len(idx), dtype=bool)
    for c in constraints:
        v = c.predictor.predict_indices(idx)[0] + c.offset
        ok &= (v <= c.target) if (c.hard_max or band is None) else (np.abs(v / c.target - 1) <= band)
    return ok


def _pool(space: SearchSpace, constraints: list[Constraint], band: float | None, seed: int, n: int = 50000) -> np.ndarray:
    idx = sample(space, min(n, space.describe()["size"]), seed)
    idx = idx[feasible(constraints, idx, band)]
    if len(idx) == 0:
        what = f"within ±{band:.0%} of" if band else "under"
        raise UserError(f"none of {n} sampled archs is predicted {what} the target(s); pick a target inside the predictor's range")
    return idx


def train_briefly(arch: Arch, searcher: Searcher, steps: int, seed: int) -> float:
    """Train the standalone arch for `steps` SGD steps on the w half; top-1 on the α half."""
    cfg, device = searcher.state.cfg, searcher.device
    torch.manual_seed(seed)
    net = build(arch).to(device, memory_format=layout(device))
    opt = torch.optim.SGD(param_groups(net, cfg.w_weight_decay), lr=cfg.w_lr, momentum=cfg.w_momentum, nesterov=True)
    step = 0
    while step < steps:
        for x, y in searcher.w_loader:
            if step >= steps:
                break
            for g in opt.param_groups:
                g["lr"] = cfg.w_lr * lr_factor(step, 0, steps)
            net.train()
            loss = F.cross_entropy(net(x.to(device, memory_format=layout(device))), y.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
    return accuracy(net, searcher)


def accuracy(net: nn.Module, searcher: Searcher, gates: torch.Tensor | None = None, limit: int | None = None) -> float:
    """Top-1 on the α half; a supernet path (`gates`) is evaluated with batch statistics, since
    its BN running stats are a blend over all the paths drawn in training."""
    correct = n = 0
    net.train(gates is not None)
    with torch.no_grad():
        for x, y in DataLoader(searcher.a_loader.dataset, batch_size=256):
            x, y = x.to(searcher.device, memory_format=layout(searcher.device)), y.to(searcher.device)
            out = net(x) if gates is None else net(x, gates)
            correct += int((out.argmax(1) == y).sum())
            n += len(y)
            if limit and n >= limit:
                break
    return correct / n


def random_search(searcher: Searcher, candidates: int, on_candidate: Callable[[dict], None]) -> tuple[Arch, list[dict]]:
    """Draw archs predicted within ±2% of the target(s), train each briefly, keep the best."""
    s = searcher.state
    pool = _pool(s.space, s.constraints, RANDOM_BAND, s.cfg.seed)[:candidates]
    budget = s.cfg.epochs * searcher.steps_per_epoch
    steps = max(1, budget // len(pool))
    rows = []
    for i, idx in enumerate(pool):
        arch = s.space.from_indices(idx)
        acc = train_briefly(arch, searcher, steps, s.cfg.seed + i)
        row = {"candidate": i + 1, "arch": arch.string, "train_steps": steps, "val_acc": acc,
               **{c.name: c.predict(arch)[0] for c in s.constraints}}
        rows.append(row)
        on_candidate(row)
    best = max(rows, key=lambda r: r["val_acc"])
    return s.space.parse(best["arch"]), rows


def evolution_search(searcher: Searcher, population: int, generations: int, on_generation: Callable[[dict], None],
                     mutate_p: float = 0.1, parents: float = 0.25) -> tuple[Arch, list[dict]]:
    """OFA-style: train the supernet on uniformly drawn paths for the budget, then evolve archs
    under a hard constraint (predicted <= each target), with the one-shot accuracy of each arch
    (supernet weights, batch-stat BN, 512 α-half images) as the short-training proxy."""
    s = searcher.state
    rng = np.random.default_rng(s.cfg.seed)
    searcher.run(s.cfg.epochs, train_alpha=False)
    allowed = s.space.allowed
    pool = _pool(s.space, s.constraints, None, s.cfg.seed)
    cache: dict[bytes, float] = {}

    def fitness(idx: np.ndarray) -> float:
        key = idx.tobytes()
        if key not in cache:
            cache[key] = accuracy(s.net, searcher, path_gates(s.space, idx, searcher.device), limit=512)
        return cache[key]

    def mutate(idx: np.ndarray) -> np.ndarray:
        for _ in range(100):
            child = idx.copy()
            for l in np.flatnonzero(rng.random(len(idx)) < mutate_p):
                child[l] = rng.choice(np.flatnonzero(allowed[l]))
            if feasible(s.constraints, child[None], None)[0]:
                return child
        return idx

    def crossover(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        for _ in range(100):
            child = np.where(rng.random(len(a)) < 0.5, a, b)
            if feasible(s.constraints, child[None], None)[0]:
                return child
        return a

    pop = list(pool[rng.permutation(len(pool))[:population]])
    rows = []
    for g in range(generations):
        scored = sorted(pop, key=fitness, reverse=True)
        best = scored[0]
        arch = s.space.from_indices(best)
        row = {"generation": g + 1, "arch": arch.string, "val_acc": fitness(best), "evaluated": len(cache),
               **{c.name: c.predict(arch)[0] for c in s.constraints}}
        rows.append(row)
        on_generation(row)
        elite = scored[: max(2, int(parents * population))]
        children = [mutate(elite[rng.integers(len(elite))]) for _ in range(population // 2)]
        children += [crossover(elite[rng.integers(len(elite))], elite[rng.integers(len(elite))])
                     for _ in range(population - len(elite) - len(children))]
        pop = elite + children
    best = max(pop, key=fitness)
    return s.space.from_indices(best), rows
