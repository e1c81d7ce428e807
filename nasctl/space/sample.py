"""Draw architectures: uniform, or stratified so that a cost spreads evenly from small to large.

Uniform sampling piles archs up around the mean cost (a sum of 21 independent choices), so a
predictor fitted on it sees few of the small and large archs that searches end up at. The
stratified mode splits [cheapest, dearest] into n equal-width bins and fills each bin from a pool
drawn with per-layer op probabilities tilted towards cheap or dear ops.
"""

from __future__ import annotations

import numpy as np

from nasctl.errors import UserError
from nasctl.space.space import SearchSpace


def _unique_rows(idx: np.ndarray, seen: set) -> list[np.ndarray]:
    out = []
    for row in idx:
        key = row.tobytes()
        if key not in seen:
            seen.add(key)
            out.append(row)
    return out


def sample(space: SearchSpace, n: int, seed: int = 0, spread: np.ndarray | None = None) -> np.ndarray:
    """n distinct archs as an (n, L) array of op indices; the same seed gives the same archs.

    `spread`: an L x K cost table (e.g. the exact MACs of `nasctl.models.cost_table`) whose sum
    the archs spread evenly over; None samples uniformly. The caller passes it, so this module
    needs no model code."""
    if n < 1:
        raise UserError("--n must be at least 1")
    allowed = space.allowed
    size = space.describe()["size"]
    if n > size:
        raise UserError(f"space {space.name!r} has only {int(size)} archs, asked for {n}")
    rng = np.random.default_rng(seed)
    seen: set = set()
    if spread is None:
        got: list[np.ndarray] = []
        while len(got) < n:
            got += _unique_rows(space.draw(np.zeros((1,) + allowed.shape), rng), seen)[: n - len(got)]
        return np.stack(got)
    return _stratified(space, n, rng, np.asarray(spread, dtype=float))


def _stratified(space: SearchSpace, n: int, rng: np.random.Generator, cost: np.ndarray) -> np.ndarray:
    allowed = space.allowed
    ops = allowed & (np.asarray(space.ops) != space.absent)  # an absent edge is no op to tilt towards
    lo = np.where(ops, cost, np.inf).min(1, keepdims=True)
    hi = np.where(ops, cost, -np.inf).max(1, keepdims=True)
    norm = np.where(ops, (cost - lo) / np.maximum(hi - lo, 1e-12), 0.0)  # 0 cheapest, 1 dearest
    cmin, cmax = space.cost_range(lo[:, 0], hi[:, 0])
    edges = np.linspace(cmin, cmax, n + 1)

    seen: set = set()
    pool: list[np.ndarray] = []
    # Tilts from strongly-cheap to strongly-dear reach both tails; a tilt of 0 is uniform.
    for _ in range(8):
        tilt = rng.uniform(-12, 12, size=(max(20 * n, 4000), 1, 1))
        pool += _unique_rows(space.draw(tilt * norm[None], rng), seen)
        idx = np.stack(pool)
        c = cost[np.arange(allowed.shape[0]), idx].sum(1)
        bins = np.clip(np.searchsorted(edges, c, side="right") - 1, 0, n - 1)
        if np.unique(bins).size == n or len(pool) >= 200 * n:
            break
    order = rng.permutation(len(idx))
    idx, c, bins = idx[order], c[order], bins[order]
    # One per bin; bins nobody reached (the extreme tails) take the nearest unused arch.
    chosen = np.full(n, -1)
    first = np.unique(bins, return_index=True)
    chosen[first[0]] = first[1]
    used = np.zeros(len(idx), bool)
    used[first[1]] = True
    centers = (edges[:-1] + edges[1:]) / 2
    for b in np.flatnonzero(chosen < 0):
        dist = np.where(used, np.inf, np.abs(c - centers[b]))
        j = int(dist.argmin())
        chosen[b], used[j] = j, True
    return idx[chosen[rng.permutation(n)]]  # not sorted by cost: a cut-short run still spans it
