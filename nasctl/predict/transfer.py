"""A new device from a few rows: devices already measured are the prior.

Every prior becomes one L x K table (a LUT predictor's own; another predictor's additive
projection; a LUT fitted on rows of another device). The new device's table is then fitted like
any LUT (`fit.fit_lut`), with these tables beside the space's cost features: its latency is a
shrunk mix of what the other devices and the costs say, plus per-entry deviations that the rows
earn once there are enough of them. Both shrinkage strengths are chosen by exact leave-one-out,
so 5 rows fit a sane table and 5,000 a free one.

Which rows: `choose` picks them greedily for the most information about that mix (D-optimal
design on the mix's row features, one-hots beside them for coverage), starting from the rows
already measured, so a second round goes where the current fit is least sure (the posterior
variance of the linear fit).
"""

from __future__ import annotations

import numpy as np

from nasctl.errors import UserError
from nasctl.models.cost import cost_table
from nasctl.space.space import SearchSpace

MIN_PRIOR_ROWS = 5  # a transfer fit's minimum: the mix's leave-one-out needs a few rows to choose
PER_STRATUM = 2  # `choose`'s picks per stratum of size


def transfer_features(space: SearchSpace, tables: list[np.ndarray]) -> np.ndarray:
    """L x K x (6 + priors): the space's device features (`CostTable.device_features`) and each
    prior device's table (`priors.load_prior`)."""
    return np.concatenate([cost_table(space).device_features(), *(t[..., None] for t in tables)], -1)


def choose(space: SearchSpace, pool: np.ndarray, n: int, features: np.ndarray, measured: np.ndarray | None = None,
           coverage: float = 0.1, per_stratum: int = PER_STRATUM) -> np.ndarray:
    """Indices into `pool` ((P, L) op indices) of the n archs to measure next.

    Greedy D-optimal design within strata: each pick has the largest posterior variance
    x^T M^-1 x, where x is the arch's standardized row features (sum of `features` over its ops)
    with its one-hot scaled by `coverage` beside them, and M sums the picks so far and the
    `measured` archs. The pool is cut into ceil(n/2) equal-count strata along its main axis of
    size (the first principal component of those features), and each stratum gets at most two
    picks (`per_stratum`; n or more: one stratum, a free design). Why: a free design takes mostly extremes, which pin the mix's slopes but not the
    middle, where most nets are. On this CPU at 2 threads the extremes gained less from the
    second thread than the typical net, and a fit on 10 of them missed by 28% (10 uniform rows:
    5%). One pick a stratum matched the middle but, on HELP's raspi4 with two priors, lost rank
    (rho 0.95 against 0.977 free, over 8 pools); two a stratum kept it (0.972). Within a stratum
    the variance still chooses, and the one-hots make later picks cover ops not yet seen (the
    deviations need them)."""
    if n < 1:
        raise UserError("--budget must be at least 1")
    if len(pool) == 0:
        raise UserError("the pool of archs to choose from is empty")
    if n > len(pool):
        raise UserError(f"--budget {n} is larger than the pool ({len(pool)} archs)")
    L, K = space.allowed.shape
    F = features.reshape(L * K, -1)
    onehot = lambda idx: np.eye(K)[idx].reshape(len(idx), -1)  # noqa: E731
    R = onehot(pool) @ F
    mu, sd = R.mean(0), np.where(R.std(0) > 0, R.std(0), 1.0)
    design = lambda oh: np.concatenate([np.ones((len(oh), 1)), (oh @ F - mu) / sd, coverage * oh], 1)  # noqa: E731
    Z = design(onehot(pool))
    std = (R - mu) / sd
    size = std @ np.linalg.svd(std, full_matrices=False)[2][0]
    strata = -(-n // per_stratum)
    stratum = size.argsort(kind="stable").argsort() * strata // len(pool)  # equal-count bands of size
    M = 1e-3 * np.eye(Z.shape[1])
    if measured is not None and len(measured):
        Zm = design(onehot(measured))
        M += Zm.T @ Zm
    Minv = np.linalg.inv(M)
    v = np.einsum("pi,ij,pj->p", Z, Minv, Z)  # each arch's posterior variance, kept current below
    picked: list[int] = []
    for _ in range(n):
        v[picked] = -np.inf
        full = np.bincount(stratum[picked], minlength=strata) >= per_stratum
        j = int(np.where(full[stratum], -np.inf, v).argmax())
        picked.append(j)
        u = Minv @ Z[j]  # Sherman-Morrison for M + z z^T, applied to M^-1 and to every variance
        denom = 1.0 + Z[j] @ u
        v -= (Z @ u) ** 2 / denom
        Minv -= np.outer(u, u) / denom
    return np.array(picked)
