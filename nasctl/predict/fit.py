"""Fitting: the LUT (a cost prior plus shrunk least squares), a robust LUT, MLPs by Adam with early stopping, and the choice.

The training rows are split once more (seeded): 80% to fit, 10% to stop the MLPs early and pick
their weight decay, 10% to choose. Every candidate (LUT, robust LUT, plain MLP, robust LUT +
residual MLP) is fitted on the first part. On the last part (which no fit and no early stop has
seen) they are tried in order of complexity, each against the current choice, starting from the
LUT: one replaces it only if the paired per-row reduction of absolute error exceeds
two standard errors and 1% of the error. Without the 1%, near-identical models (the robust LUT
on Gaussian noise, a residual MLP that learned almost nothing) "win" on consistent but negligible
differences, and the last of them was picked by a hair (seen on HELP's GTX 1080 Ti column).
Choosing on the early-stopping rows would favour the MLPs: they are tuned there.

Why robust, and why absolute error: whole-network measurements carry rare, one-sided
disturbances (a run is only ever slowed; HELP's Xeon column has residual kurtosis ~22, q99 at
+5 robust sigmas against q01 at -1). No model can predict them, least squares bends every
coefficient towards them, and squared error on held-out rows is dominated by them. A Huber loss
at 3 robust sigmas is least squares on clean Gaussian noise and ignores the disturbed rows; the
absolute error measures how well the typical arch is predicted. Layer interactions, by contrast,
we have not found: on HELP's columns adjacent-pair terms, boosted trees and MLPs on the LUT's
residual all fit noise, so the residual MLP wins only where a device really is non-additive.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import median_abs_deviation
from sklearn.linear_model import RidgeCV
from torch import nn

from nasctl.predict.models import MLP, Additive, Ensemble, Residual


@dataclass(frozen=True)
class FitConfig:
    seed: int = 0
    inner_val: float = 0.2  # half for early stopping, half for the choice
    members: int = 5
    weight_decays: tuple[float, ...] = (0.0, 1e-4, 1e-3, 1e-2)
    max_epochs: int = 400
    patience: int = 40
    batch: int = 128
    lr: float = 1e-3
    hidden: tuple[int, ...] = (128, 64)  # the space's MLP (`space.mlp`), set by fit_predictor
    activation: str = "relu"


def robust_sigma(r: np.ndarray) -> float:
    """The noise scale that outliers do not inflate: the median absolute deviation, scaled to a
    normal σ."""
    return float(median_abs_deviation(r, scale="normal"))


def _ridge(B: np.ndarray, r: np.ndarray, alpha: float) -> np.ndarray:
    """argmin |B d - r|^2 + alpha |d|^2, minimum-norm where alpha is 0 (one-hots are collinear)."""
    A = np.concatenate([B, np.sqrt(alpha) * np.eye(B.shape[1])]) if alpha > 0 else B
    return np.linalg.lstsq(A, np.concatenate([r, np.zeros(len(A) - len(r))]), rcond=None)[0]


LOO_GRID = np.logspace(-9, 1, 41)  # ridge strengths, relative to the largest squared singular value


def _loo_alpha(B: np.ndarray, r: np.ndarray) -> float:
    """The ridge strength with the lowest exact leave-one-out error (PRESS): scikit-learn's
    RidgeCV, whose default is the efficient exact LOO (tests check it against n refits). Not
    GCV: with about as many rows as entries GCV sometimes picks no shrinkage at all (3.6%
    against 2.0% MAPE on 100 local rows, seen); the exact LOO does not."""
    top = np.linalg.norm(B, 2) ** 2
    return float(RidgeCV(alphas=top * LOO_GRID, fit_intercept=False).fit(B, r).alpha_)


MIX_GRID = np.logspace(-4, 4, 33)  # ridge strengths of the mix, per row, on standardized columns


def _mix(F: np.ndarray, y: np.ndarray, shrink: bool) -> np.ndarray:
    """Intercept and slopes of y on the row features F (first column the ones).

    With `shrink` (many features, few rows: a transfer fit), first the one feature whose own
    straight line has the lowest leave-one-out error (the anchor: usually a prior device or
    the MACs), then ridge on the standardized features for what it leaves, at the strength with
    the lowest exact leave-one-out error. The priors' tables are near-collinear (every device is
    slower on bigger nets), and 10 rows cannot tell 9 slopes apart by least squares (rho 0.90
    against 0.97 on HELP's raspi4). The anchor gives the ridge a target other than "no slope
    at all": 10 rows from the middle of a space, timed with a few % of noise, made a plain ridge
    predict one flat latency for every arch (rho 0.06 on this CPU at 2 threads; anchored 0.96).
    """
    if not shrink or F.shape[1] == 1:
        return np.linalg.lstsq(F, y, rcond=None)[0]
    R, n = F[:, 1:], len(y)
    best = None
    for j in range(R.shape[1]):
        A = np.stack([np.ones(n), R[:, j]], 1)
        P = np.linalg.pinv(A)
        coef, lev = P @ y, np.einsum("ij,ji->i", A, P)  # the line and the hat matrix's diagonal
        loo = np.mean(((y - A @ coef) / np.maximum(1 - lev, 1e-9)) ** 2)  # PRESS of a straight line
        if best is None or loo < best[0]:
            best = (loo, j, coef)
    _, j, (a0, b0) = best
    anchor = np.zeros(R.shape[1])
    anchor[j] = b0
    mu, sd = R.mean(0), R.std(0)
    sd = np.where(sd > 0, sd, 1.0)
    r = RidgeCV(alphas=MIX_GRID * n, fit_intercept=True).fit((R - mu) / sd, y - a0 - R @ anchor)
    slopes = r.coef_ / sd
    return np.concatenate([[a0 + r.intercept_ - mu @ slopes], anchor + slopes])


def fit_lut(X: np.ndarray, y: np.ndarray, robust: bool = False, features: np.ndarray | None = None, shrink: bool = True,
            shrink_mix: bool = False) -> Additive:
    """The additive table: a cost prior plus per-(layer, op) deviations from it, shrunk by ridge
    at the strength with the lowest leave-one-out error.

    Why the prior: with fewer rows than entries (the quickstart fits 147 on 48) least squares is
    underdetermined and its minimum-norm table is off by ~5% on unseen archs. Latency is nearly
    linear in an op's MACs and params (`features`, L x K x F), so a fit of those few slopes gives
    every entry a sane value and the rows correct it where they can: 2.0% on the same rows
    (benchmarks/predictor_local.py, few_rows). With thousands of rows LOO picks next to no
    shrinkage and the table is the least-squares one. Without `features` and `shrink` it is the
    classic least-squares LUT, kept as the reference figure beside the others.

    With `robust`, the deviations are refitted with Huber weights at 3 robust sigmas of the first
    fit's residual (iteratively reweighted, same shrinkage). With `shrink_mix` the slopes on the
    features are shrunk too (`_mix`): for many features and few rows, as in a transfer fit.
    """
    n, L, K = X.shape
    B = X.reshape(n, -1)
    F = np.ones((n, 1)) if features is None else np.concatenate([np.ones((n, 1)), np.einsum("nlk,lkf->nf", X, features)], 1)
    c = _mix(F, y, shrink_mix)
    r = y - F @ c
    alpha = _loo_alpha(B, r) if shrink else 0.0
    d = _ridge(B, r, alpha)
    if robust and (scale := 3 * robust_sigma(r - B @ d)) > 0:
        for _ in range(100):
            w = np.sqrt(np.minimum(1.0, scale / np.maximum(np.abs(r - B @ d), 1e-12)))
            d, before = _ridge(B * w[:, None], r * w, alpha), d
            if np.allclose(d, before, rtol=1e-6, atol=1e-9):
                break
    table = d.reshape(L, K) + (0.0 if features is None else features @ c[1:])
    lut = Additive(L, K)
    with torch.no_grad():
        lut.bias.fill_(float(c[0]))
        lut.weight.copy_(torch.as_tensor(table, dtype=torch.float32))
    return lut


def _rmse(model, X: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float(torch.sqrt(torch.mean((model(X) - y) ** 2)))


def train_mlp(Xt, yt, Xv, yv, wd: float, seed: int, cfg: FitConfig, zero_head: bool = False) -> tuple[MLP, float]:
    """One MLP on a standardized target; returns the best-validation state and its RMSE.

    With `zero_head` the output layer starts at 0, so a residual MLP starts exactly at the LUT
    and moves away only where validation agrees.
    """
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    L, K = Xt.shape[1:]
    m = MLP(L, K, cfg.hidden, cfg.activation)
    if zero_head:
        nn.init.zeros_(m.net[-1].weight)
        nn.init.zeros_(m.net[-1].bias)
    m.y_mean.fill_(float(yt.mean()))
    m.y_std.fill_(float(yt.std()) or 1.0)
    opt = torch.optim.AdamW(m.parameters(), lr=cfg.lr, weight_decay=wd)
    best, best_state, bad = _rmse(m, Xv, yv), {k: t.clone() for k, t in m.state_dict().items()}, 0
    for _ in range(cfg.max_epochs):
        m.train()
        for idx in torch.randperm(len(Xt), generator=g).split(cfg.batch):
            loss = torch.mean(((m(Xt[idx]) - yt[idx]) / m.y_std) ** 2)
            opt.zero_grad()
            loss.backward()
            opt.step()
        m.eval()
        v = _rmse(m, Xv, yv)
        if v < best - 1e-9:
            best, best_state, bad = v, {k: t.clone() for k, t in m.state_dict().items()}, 0
        else:
            bad += 1
            if bad >= cfg.patience:
                break
    m.load_state_dict(best_state)
    return m, best


def fit_ensemble(Xt, yt, Xv, yv, cfg: FitConfig, zero_head: bool = False) -> tuple[Ensemble, float]:
    """Weight decay chosen on validation with the first seed, then `members` seeds."""
    trials = [train_mlp(Xt, yt, Xv, yv, wd, cfg.seed, cfg, zero_head) + (wd,) for wd in cfg.weight_decays]
    first, _, wd = min(trials, key=lambda t: t[1])
    members = [first] + [train_mlp(Xt, yt, Xv, yv, wd, cfg.seed + i, cfg, zero_head)[0] for i in range(1, cfg.members)]
    ens = Ensemble(members).eval()
    return ens, _rmse(ens, Xv, yv)


MIN_CHOICE_ROWS = 30


def significant_gain(base_err: np.ndarray, cand_err: np.ndarray, z: float = 2.0, min_gain: float = 0.01) -> bool:
    """Whether a candidate's per-row errors are lower than the base's beyond noise, and by a
    margin worth a more complex model. Under MIN_CHOICE_ROWS rows the spread itself is a guess
    (the quickstart's 60 rows leave 5: an MLP with twice the LUT's held-out error won there)."""
    d = base_err - cand_err
    if len(d) < MIN_CHOICE_ROWS:
        return False
    return bool(d.mean() > max(z * d.std(ddof=1) / np.sqrt(len(d)), min_gain * base_err.mean()))


@dataclass
class Candidates:
    """Every fitted candidate with its mean absolute error on the choice rows, and the chosen one."""

    models: dict
    val_mae: dict
    chosen: str


def fit_candidates(X: np.ndarray, y: np.ndarray, cfg: FitConfig = FitConfig(), features: np.ndarray | None = None,
                   shrink_mix: bool = False) -> Candidates:
    """`features`: the space's per-(layer, op) cost features, the LUTs' prior (see fit_lut); with
    `shrink_mix`, many of them (a transfer fit's)."""
    rng = np.random.default_rng(cfg.seed)
    perm = rng.permutation(len(y))
    nv = max(2, int(round(cfg.inner_val * len(y))))
    v, c, t = perm[: nv // 2], perm[nv // 2 : nv], perm[nv:]
    as_t = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    Xt, Xv, Xc, yt, yv, yc = as_t(X[t]), as_t(X[v]), as_t(X[c]), as_t(y[t]), as_t(y[v]), as_t(y[c])

    lut = lambda X, y, robust=False: fit_lut(X, y, robust, features, shrink_mix=shrink_mix).eval()  # noqa: E731
    inner = {"lut": lut(X[t], y[t]), "robust": lut(X[t], y[t], True)}
    inner["mlp"], _ = fit_ensemble(Xt, yt, Xv, yv, cfg)
    with torch.no_grad():
        rt, rv = yt - inner["robust"](Xt), yv - inner["robust"](Xv)
    res_mlp, _ = fit_ensemble(Xt, rt, Xv, rv, cfg, zero_head=True)
    inner["residual"] = Residual(inner["robust"], res_mlp).eval()
    with torch.no_grad():
        err = {k: (m(Xc) - yc).abs().numpy() for k, m in inner.items()}
    val = {k: float(e.mean()) for k, e in err.items()}
    chosen = "lut"
    for k in ("robust", "residual", "mlp"):  # simplest first
        if significant_gain(err[chosen], err[k]):
            chosen = k
    # The LUTs alone use every training row: they need no validation data.
    models = {"lut": lut(X, y), "robust": lut(X, y, True), "mlp": inner["mlp"], "residual": inner["residual"],
              "lut_ls": fit_lut(X, y, shrink=False).eval()}  # reported, never chosen
    return Candidates(models, val, chosen)
