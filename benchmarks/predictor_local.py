"""Issue-4 figures 2 and 3: a predictor fitted on latencies measured here, and inference speed.

2. Fits `nasctl fit-predictor` on a profiled run (>= 1,000 stratified proxyless archs at
   224x224 on local-cpu) and reports the held-out 20%: MAPE, Kendall tau, share within +-10%,
   beside the LUT. The rows stay in the run folder so the figures can be re-checked.
3. Batched inference throughput of the saved predictor, archs/s, on 1,000,000 random archs.

Usage: python benchmarks/predictor_local.py runs/local-1000/latency.parquet
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from nasctl.predict import Predictor, fit_predictor, load_rows


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
        "test": {k: rep["test"][k] for k in ("default", "lut", "robust", "mlp", "residual")},
        "latency_range_ms": [float(rows.y.min()), float(rows.y.max())],
        "inference": {"archs": a.n_infer, "seconds": dt, "archs_per_s": a.n_infer / dt,
                      "torch_threads": torch.get_num_threads(), "with_std": True},
    }, indent=2))


if __name__ == "__main__":
    main()
