"""Issue-8 figure: in the DARTS cell space, does the LUT or LA-DARTS's LPM predict latency better?

Rows: `nasctl profile --device local` on >= 500 stratified darts genotypes (the 8-cell search
network at 32x32, onnxruntime, 1 thread), made by:

    nasctl sample --space darts --n 600 --seed 0 --stratify macs -o runs/darts-600/archs.parquet
    nasctl profile --device local --archs runs/darts-600/archs.parquet -o runs/darts-600/latency.parquet

Then `fit-predictor`'s seeded 80/20 split, 5 seeds: MAPE, Kendall tau and share within +-10% on
the held-out rows for the least-squares LUT, nasctl's LUT (cost prior + shrinkage), the LPM
(the space's MLP: 256-64-1 sigmoid) and the default. Beside them: how far latency strays from
MACs (the LA-DARTS paper's "same FLOPs, 32% different latency"): the largest latency ratio
between two measured genotypes whose MACs differ by under 1%, and Kendall tau of MACs against
latency. Prints one JSON object.

Usage: python benchmarks/darts_predictor.py runs/darts-600/latency.parquet [--splits 5]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy import stats

from nasctl.predict import FitConfig, fit_predictor, load_rows

MODELS = ("lut_ls", "lut", "robust", "mlp", "residual", "default")
FIGS = ("mape", "kendall_tau", "within_10", "rmse")


def same_macs_spread(macs: np.ndarray, lat: np.ndarray, rel: float = 0.01) -> dict:
    order = np.argsort(macs)
    m, y = macs[order], lat[order]
    worst, pair = 1.0, None
    for i in range(len(m)):
        j = i + 1
        while j < len(m) and m[j] <= m[i] * (1 + rel):
            ratio = max(y[i], y[j]) / min(y[i], y[j])
            if ratio > worst:
                worst, pair = ratio, (float(m[i]), float(m[j]), float(y[i]), float(y[j]))
            j += 1
    return {"max_latency_ratio_within_1pct_macs": worst, "pair_macs_latency": pair,
            "kendall_tau_macs_vs_latency": float(stats.kendalltau(macs, lat).statistic)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rows", type=Path)
    ap.add_argument("--splits", type=int, default=5)
    a = ap.parse_args()
    rows = load_rows(a.rows, "latency_ms")
    per = {k: [] for k in MODELS}
    chosen = []
    for seed in range(a.splits):
        _, rep, _ = fit_predictor(rows, "latency_ms", 0.2, seed, FitConfig(seed=seed))
        chosen.append(rep["chosen"])
        for k in MODELS:
            per[k].append([rep["test"][k][f] for f in FIGS])
    print(json.dumps({
        "rows": int(len(rows.y)), "space": rows.space.name, "cells": len(rows.space.cells),
        "latency_range_ms": [float(rows.y.min()), float(rows.y.max())],
        "lpm": {"hidden": list(rows.space.mlp[0]), "activation": rows.space.mlp[1], "inputs": int(rows.X[0].size)},
        "held_out_mean_over_splits": {k: dict(zip(FIGS, np.mean(v, 0).round(5).tolist())) for k, v in per.items()},
        "chosen": chosen,
        "macs_vs_latency": same_macs_spread(rows.frame["macs"].to_numpy(float), rows.y),
    }, indent=2))


if __name__ == "__main__":
    main()
