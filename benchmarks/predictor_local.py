"""Issue-4 figures 2 and 3: a predictor fitted on latencies measured here, and inference speed.

2. Fits `nasctl fit-predictor` on a profiled run (>= 1,000 stratified proxyless archs at
   224x224 on local-cpu) and reports the held-out 20%: MAPE, Kendall tau, share within +-10%,
   beside the LUT. The rows stay in the run folder so the figures can be re-checked.
3. Batched inference throughput of the saved predictor, archs/s, on 1,000,000 random archs.
4. Few rows (the quickstart fits on 48): the LUT with its cost prior against the classic
   least-squares LUT, fitted on 48/100/200 random rows and tested on all the others, 5 seeds.

Usage: python benchmarks/predictor_local.py runs/local-1000/latency.parquet
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from nasctl.models.cost import cost_table
from nasctl.predict import Predictor, fit_predictor, load_rows
from nasctl.predict.fit import fit_lut
from nasctl.predict.metrics import figures


def few_rows(rows, sizes=(48, 100, 200), seeds=5) -> dict:
    feats = cost_table(rows.space).features()
    X = torch.as_tensor(rows.X, dtype=torch.float32)
    out = {}
    for n in sizes:
        per = {"lut": [], "lut_ls": []}
        for seed in range(seeds):
            perm = np.random.default_rng(seed).permutation(len(rows.y))
            tr, te = perm[:n], perm[n:]
            for k, m in (("lut", fit_lut(rows.X[tr], rows.y[tr], features=feats)), ("lut_ls", fit_lut(rows.X[tr], rows.y[tr], shrink=False))):
                with torch.no_grad():
                    f = figures(rows.y[te], m(X[te]).numpy())
                per[k].append([f["mape"], f["kendall_tau"], f["within_10"]])
        out[n] = {k: dict(zip(("mape", "kendall_tau", "within_10"), np.mean(v, 0).round(5).tolist())) for k, v in per.items()}
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rows", type=Path)
    ap.add_argument("--metric", default="latency_ms")
    ap.add_argument("--n-infer", type=int, default=1_000_000)
    a = ap.parse_args()
    rows = load_rows(a.rows, a.metric)
    pred, rep, _ = fit_predictor(rows, a.metric)
    path = a.rows.with_name("predictor.pt")
    pred.save(path)
    pred = Predictor.load(path)

    space = rows.space
    rng = np.random.default_rng(0)
    allowed = [np.flatnonzero(r) for r in space.allowed]
    idx = np.stack([rng.choice(c, a.n_infer) for c in allowed], 1)
    pred.predict_indices(idx[:1000])  # warm up
    t0 = time.perf_counter()
    mean, std = pred.predict_indices(idx)
    dt = time.perf_counter() - t0
    print(json.dumps({
        "rows": rep["rows"], "train_rows": rep["train_rows"], "test_rows": rep["test_rows"],
        "chosen": rep["chosen"], "fit_s": rep["fit_s"],
        "test": {k: rep["test"][k] for k in ("default", "lut", "robust", "mlp", "residual", "lut_ls")},
        "latency_range_ms": [float(rows.y.min()), float(rows.y.max())],
        "inference": {"archs": a.n_infer, "seconds": dt, "archs_per_s": a.n_infer / dt,
                      "torch_threads": torch.get_num_threads(), "with_std": True},
        "few_rows": few_rows(rows),
    }, indent=2))


if __name__ == "__main__":
    main()
