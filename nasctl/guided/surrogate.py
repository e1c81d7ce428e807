"""The accuracy model of a predictor-guided search: a Gaussian process on the arch's one-hot and
its cost (log params and log MACs, exact from the cost table).

Why: with a handful of trained nets the model must already rank by what is cheap to know, and the
trainings then correct it where they can. The kernel is a linear term (accuracy grows with a
net's cost) plus an RBF (what the cost does not say) plus noise; its hyperparameters are fitted
by marginal likelihood on every refit. The posterior std is what expected improvement, UCB and
Thompson draws trade against the mean.

The one-hot is scaled down (ONEHOT_SCALE) so that the RBF's distance is mostly the cost's: at full
scale it chased single layers. On NAS-Bench-Macro, held-out Spearman rho, 10 seeds: params alone
0.32, MACs alone 0.75; this model 0.80 at 10 rows (0.73 with the one-hot at full scale), 0.87 at
20 (`benchmarks/tabular.py rho` keeps the figures).
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.stats import norm
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, DotProduct, WhiteKernel

from nasctl.models.cost import cost_table
from nasctl.space.sample import sample
from nasctl.space.space import SearchSpace

ONEHOT_SCALE = 0.35


class Surrogate:
    """Fit on (archs as op indices, top-1); predict mean and std for many archs at once."""

    def __init__(self, space: SearchSpace, seed: int = 0):
        self.space, self.seed, self.cost = space, seed, cost_table(space)
        ref = self._log_cost(sample(space, min(256, int(space.describe()["size"])), 0))
        self._mu, self._sd = ref.mean(0), np.maximum(ref.std(0), 1e-6)  # fixed per space: refits see one scale
        self.gp: GaussianProcessRegressor | None = None

    def _log_cost(self, idx: np.ndarray) -> np.ndarray:
        macs, params = self.cost.of(idx)
        return np.log(np.stack([np.maximum(params, 1.0), np.maximum(macs, 1.0)], 1))

    def features(self, idx: np.ndarray) -> np.ndarray:
        idx = np.atleast_2d(idx)
        onehot = np.eye(len(self.space.ops))[idx].reshape(len(idx), -1) * ONEHOT_SCALE
        return np.concatenate([onehot, (self._log_cost(idx) - self._mu) / self._sd], 1)

    def fit(self, idx: np.ndarray, y: np.ndarray, believe: bool = False) -> Surrogate:
        """Fit the kernel by marginal likelihood; with `believe`, keep the last fit's kernel and
        scale and only condition on the rows: how pending proposals are held at their predicted
        mean (the kriging believer) so that a batch does not propose one net J times."""
        y = np.asarray(y, float)
        if believe and self.gp is not None:
            kernel, optimizer, restarts = self.gp.kernel_, None, 0
        else:
            self._ym, self._ys = float(y.mean()), float(max(y.std(), 1e-6))
            optimizer = "fmin_l_bfgs_b"
            if self.gp is None:  # the first fit tries a few starts; a refit starts where the last one ended
                kernel, restarts = ConstantKernel(1.0) * DotProduct(1.0) + ConstantKernel(1.0) * RBF(3.0) + WhiteKernel(0.1, (1e-6, 10.0)), 2
            else:
                kernel, restarts = self.gp.kernel_, 0
        gp = GaussianProcessRegressor(kernel, optimizer=optimizer, n_restarts_optimizer=restarts, random_state=self.seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            gp.fit(self.features(idx), (y - self._ym) / self._ys)
        self.gp = gp
        return self

    def predict(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean, std = self.gp.predict(self.features(idx), return_std=True)
        return mean * self._ys + self._ym, std * self._ys


def acquisition(rule: str, mean: np.ndarray, std: np.ndarray, best: float, rng: np.random.Generator) -> np.ndarray:
    """Score candidates: `ei` expected improvement over the best trained top-1 so far, `ucb` the
    mean plus two std, `thompson` one draw from each candidate's posterior (marginal: the pool
    is too large for a joint draw)."""
    std = np.maximum(std, 1e-12)
    if rule == "ucb":
        return mean + 2.0 * std
    if rule == "thompson":
        return mean + std * rng.standard_normal(len(mean))
    z = (mean - best) / std
    return (mean - best) * norm.cdf(z) + std * norm.pdf(z)
