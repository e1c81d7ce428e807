"""Predictor figures: RMSE, MAPE, Kendall tau, Spearman rho (HELP's figure), and the share within +-5% / +-10% (nn-Meter's)."""

from __future__ import annotations

import numpy as np
from scipy import stats


def figures(y_true, y_pred) -> dict:
    y, p = np.asarray(y_true, float), np.asarray(y_pred, float)
    rel = np.abs(p - y) / np.abs(y)
    return {
        "n": int(len(y)),
        "rmse": float(np.sqrt(np.mean((p - y) ** 2))),
        "mape": float(rel.mean()),
        "kendall_tau": float(stats.kendalltau(y, p).statistic),
        "spearman_rho": float(stats.spearmanr(y, p).statistic),
        "within_5": float((rel <= 0.05).mean()),
        "within_10": float((rel <= 0.10).mean()),
    }
