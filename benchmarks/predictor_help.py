"""Issue-4 figure 1: predictors on HELP's 5,000 measured FBNet archs, five columns, 5 splits.

For each column and each random 80/20 split (seeds 0-4): RMSE, MAPE, Kendall tau and share
within +-10% for the classic least-squares LUT (HELP's reference figure, `lut_ls`), nasctl's
LUT (cost prior + shrinkage), the robust (Huber) LUT, the plain LightNAS MLP and nasctl's
default; means over the splits.
Prints one JSON object. Usage: python benchmarks/predictor_help.py [--splits 5]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from nasctl.models.cost import cost_table
from nasctl.predict import FitConfig, fit_predictor, load_rows
from nasctl.predict.fit import fit_candidates

CSV = Path(__file__).resolve().parents[2] / "shared/data/help-fbnet/fbnet_cifar100_latency.csv"
COLUMNS = ["raspi4_ms", "pixel2_ms", "xeon_gold_6226_ms", "gtx1080ti_b1_ms", "gtx1080ti_b32_ms"]
NON_ADDITIVE = COLUMNS[1:]
FIGS = ("rmse", "mape", "kendall_tau", "within_10")


def fit_all(csv: Path) -> dict:
    """The issue's speed figure: seconds to fit every candidate on all 5,000 rows, per column."""
    out = {}
    for col in COLUMNS:
        rows = load_rows(csv, col, "fbnet")
        t0 = time.perf_counter()
        fit_candidates(rows.X, rows.y, features=cost_table(rows.space).features())
        out[col] = round(time.perf_counter() - t0, 1)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--csv", type=Path, default=CSV)
    ap.add_argument("--splits", type=int, default=5)
    a = ap.parse_args()
    out, fit_s = {}, []
    for col in COLUMNS:
        rows = load_rows(a.csv, col, "fbnet")
        per = {"lut_ls": [], "lut": [], "robust": [], "mlp": [], "default": []}
        chosen = []
        for seed in range(a.splits):
            _, rep, _ = fit_predictor(rows, col, 0.2, seed, FitConfig(seed=seed))
            fit_s.append(rep["fit_s"])
            chosen.append(rep["chosen"])
            for k in per:
                per[k].append([rep["test"][k][f] for f in FIGS])
        out[col] = {k: dict(zip(FIGS, np.mean(v, 0).round(5).tolist())) for k, v in per.items()}
        out[col]["chosen"] = chosen
        out[col]["default_tau_ge_lut"] = out[col]["default"]["kendall_tau"] >= out[col]["lut_ls"]["kendall_tau"]

    def mean(model, fig):
        return float(np.mean([out[c][model][fig] for c in NON_ADDITIVE]))

    summary = {
        "non_additive_mean": {m: {f: round(mean(m, f), 5) for f in FIGS} for m in per},
        "default_tau_ge_lut_every_column": all(out[c]["default_tau_ge_lut"] for c in COLUMNS),
        "default_better_mean_tau": mean("default", "kendall_tau") > mean("lut_ls", "kendall_tau"),
        "default_better_mean_rmse_share": float(np.mean([out[c]["default"]["rmse"] / out[c]["lut_ls"]["rmse"] for c in NON_ADDITIVE])),
        "fit_s_mean": float(np.mean(fit_s)),
        "fit_s_all_5000_rows": fit_all(a.csv),
        "fit_s_max": float(np.max(fit_s)),
        "rows": 5000,
        "splits": a.splits,
    }
    print(json.dumps({"columns": out, "summary": summary}, indent=2))


if __name__ == "__main__":
    main()
