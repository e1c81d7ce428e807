"""DCA-NAS's lookup graph: which budget to search at so that the derived net meets the device's.

A budgeted search constrains k_s(α), the softmax-weighted cost of all ops on all edges; the net
derived from α (2 strongest inputs per node, each its strongest op) costs something else, so a
search at the device budget K_d misses it. `--calibrate-budget` runs short searches (half the
search's epochs: measured, 2-epoch ones did not predict what an 8-epoch search derives) at
search budgets K' spread over what the space reaches, in parallel processes where cores allow,
counts each derived net exactly, and fits the map from derived cost back to K' (piecewise
linear, monotone in K'). The full search then runs at K'(K_d). The graph is stored with the
space (per space definition, metric and search settings) in the user's data folder, and any
later calibrated search reuses it, whatever its budget.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from nasctl.tables import atomic_write, to_json

POINTS = 6  # K' tried, geometrically from the least to the most the space reaches


def _store(key: dict) -> Path:
    root = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return root / "nasctl" / "lookup" / f"{Path(key['space']).stem}-{key['metric']}-{digest}.json"


def _short_search(job: dict, cfg: dict, metric: str, budget: float, epochs: int, threads: int) -> float:
    """One short search at `budget` (millions); the derived net's exact count (millions)."""
    import torch

    from nasctl.data import load_data
    from nasctl.models.cost import arch_cost
    from nasctl.search.constraints import build_constraints
    from nasctl.search.engine import SearchConfig
    from nasctl.search.ladarts import LADartsSearcher
    from nasctl.space.space import load_space

    torch.set_num_threads(threads)
    data = load_data(job["data"], job["resolution"], job["train_limit"])
    base = load_space(job["space"])
    space = base.with_params(resolution=data.resolution, num_classes=data.num_classes, width_mult=job["width_mult"])
    flag = {"params": "max_params", "mflops": "max_mflops"}[metric]
    constraints = build_constraints(space, [], **{flag: f"{budget}M"})
    searcher = LADartsSearcher(space, data, constraints, SearchConfig(**{**cfg, "epochs": epochs, "warmup_epochs": min(cfg["warmup_epochs"], epochs - 1)}))
    searcher.run(epochs)
    macs, params = arch_cost(base.parse(searcher.state.arch().string))
    return (params if metric == "params" else macs) / 1e6


def lookup_graph(job, cfg, metric: str, lo: float, hi: float, epochs: int, on_note=lambda t: None) -> dict:
    """The stored graph for this space, metric and settings, or a new one: K' per derived cost.
    `lo`, `hi`: the least and the most the space reaches."""
    key = {"space": job.space, "metric": metric, "data": job.data, "train_limit": job.train_limit, "resolution": job.resolution, "width_mult": job.width_mult,
           "cfg": {k: v for k, v in asdict(cfg).items() if k != "epochs"}, "epochs": epochs, "points": POINTS}
    path = _store(key)
    if path.exists():
        on_note(f"budget lookup graph: {path}")
        return json.loads(path.read_text())
    budgets = np.geomspace(lo, hi, POINTS).tolist()
    workers = max(1, min(len(budgets), (os.cpu_count() or 1)))
    threads = max(1, (os.cpu_count() or 1) // workers)
    on_note(f"calibrating the budget: {len(budgets)} short searches of {epochs} epochs, {workers} at a time")
    args = (asdict(job), asdict(cfg), metric)
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        derived = list(pool.map(_short_search, *zip(*[(*args, b, epochs, threads) for b in budgets])))
    graph = {"key": key, "search_budget": budgets, "derived": derived}
    atomic_write(path, to_json(graph, indent=2).encode())
    return graph


def search_budget(graph: dict, device_budget: float) -> float:
    """K' for K_d: the derived costs interpolated back to search budgets (as a running maximum,
    so a larger K_d never gets a smaller K', and a tie gives the largest K'), extrapolated by the
    end ratios outside the range."""
    k = np.asarray(graph["search_budget"], float)
    d = np.maximum.accumulate(np.asarray(graph["derived"], float))
    if device_budget <= d[0]:
        return float(k[0] * device_budget / d[0])
    if device_budget >= d[-1]:
        return float(k[-1] * device_budget / d[-1])
    return float(np.interp(device_budget, d, k))
