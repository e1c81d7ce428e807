"""Draw architectures: uniform, or stratified so that a cost spreads evenly from small to large.

Uniform sampling piles archs up around the mean cost (a sum of 21 independent choices), so a
predictor fitted on it sees few of the small and large archs that searches end up at. The
stratified mode splits [cheapest, dearest] into n equal-width bins and fills each bin from a pool
drawn with per-layer op probabilities tilted towards cheap or dear ops.
"""

from __future__ import annotations

import numpy as np

from nasctl.errors import UserError
from nasctl.space.cells import NONE
from nasctl.space.space import SearchSpace

STRATIFY = ("none", "macs", "params")


def draw(space, logits: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(N, L) op indices of valid archs, each layer's op from softmax(logits) over allowed ops
    (a cell space also picks which inputs each node keeps)."""
    return space.draw(logits, rng) if hasattr(space, "draw") else draw_layers(space.allowed, logits, rng)


def draw_layers(allowed: np.ndarray, logits: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(N, L) op indices, each layer sampled from softmax(logits) restricted to allowed ops."""
    z = np.where(allowed[None], logits, -np.inf)
    p = np.exp(z - z.max(-1, keepdims=True))
    cdf = np.cumsum(p / p.sum(-1, keepdims=True), -1)
    u = rng.random(cdf.shape[:2] + (1,))
    return np.minimum((u > cdf).sum(-1), allowed.shape[1] - 1)


def _unique_rows(idx: np.ndarray, seen: set) -> list[np.ndarray]:
    out = []
    for row in idx:
        key = row.tobytes()
        if key not in seen:
            seen.add(key)
            out.append(row)
    return out


def sample(space: SearchSpace, n: int, seed: int = 0, stratify: str = "none") -> np.ndarray:
    """n distinct archs as an (n, L) array of op indices; the same seed gives the same archs."""
    if n < 1:
        raise UserError("--n must be at least 1")
    if stratify not in STRATIFY:
        raise UserError(f"unknown stratify {stratify!r} (one of: {', '.join(STRATIFY)})")
    allowed = space.allowed
    size = space.describe()["size"]
    if n > size:
        raise UserError(f"space {space.name!r} has only {int(size)} archs, asked for {n}")
    rng = np.random.default_rng(seed)
    seen: set = set()
    if stratify == "none":
        got: list[np.ndarray] = []
        while len(got) < n:
            got += _unique_rows(draw(space, np.zeros((1,) + allowed.shape), rng), seen)[: n - len(got)]
        return np.stack(got)
    return _stratified(space, n, rng, stratify)


def _stratified(space: SearchSpace, n: int, rng: np.random.Generator, key: str) -> np.ndarray:
    from nasctl.models.cost import cost_table  # models imports space; keep the cycle lazy

    table = cost_table(space)
    cost = (table.macs if key == "macs" else table.params).astype(float)
    allowed = space.allowed
    ops = allowed & (np.asarray(space.ops) != NONE)  # an absent edge is no op to tilt towards
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
        pool += _unique_rows(draw(space, tilt * norm[None], rng), seen)
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
