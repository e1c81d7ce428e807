"""Issue-5 figures: LightNAS to three targets in one search each, the FBNet λ sweep, single-
against multi-path cost, and accuracy against `random` at one target.

1. Three targets at the 25th/50th/75th percentile of the measured latencies, one `nasctl search
   --verify local` each (default settings): predicted, measured, λ per epoch.
2. FBNet with a fixed λ, bisected in log λ on the middle target until the argmax arch is
   predicted within ±3% (then verified): how many searches it took.
3. One process per mode: steps of w + α on the same supernet, batch and data; median step time
   and peak memory (RSS growth over the process before the first step; CUDA: max allocated).
4. `random` at the middle target with the same weight-training steps; the LightNAS arch and the
   random arch each retrained with one recipe; top-1 on digits.
Prints one JSON object. Usage: python benchmarks/search.py ROWS.parquet [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd

from clirun import nasctl

COMMON = ["--resolution", "16"]


def lambda_trajectory(run: Path) -> list[float]:
    rows = pd.read_csv(run / "search.csv")
    return rows.dropna(subset=["argmax_latency_ms"])["lambda_latency_ms"].round(4).tolist()


def cost_probe(method: str, steps: int = 6) -> dict:
    """Run in a fresh process: w step + α step, `steps` times, on digits at batch 64."""
    code = f"""
import json, resource, statistics, time, torch
from nasctl.data import load_data
from nasctl.search.constraints import Constraint
from nasctl.predict import exact_cost
from nasctl.search.engine import SearchConfig, Searcher
from nasctl.space import load_space
torch.set_num_threads(2)
def rss():
    return int(open('/proc/self/statm').read().split()[1]) * 4096
sp = load_space('proxyless', macro='cifar', resolution=16, num_classes=10, width_mult=0.5)
c = Constraint('mflops', exact_cost(load_space('proxyless'), 'mmacs'), 400.0, 'M', hard_max=True)
s = Searcher(sp, load_data('digits', 16), [c], SearchConfig(method='{method}', epochs=2, warmup_epochs=0, batch=64))
cuda = s.device.type == 'cuda'
base = rss()
times = []
it = iter(zip(s.w_loader, s.a_loader))
for i in range({steps}):
    (xw, yw), (xa, ya) = next(it)
    t = time.perf_counter()
    s._w_step(xw, yw, 1.0, True)
    s._alpha_step(xa, ya, 1.0, True)
    times.append(time.perf_counter() - t)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({{"step_s_median": statistics.median(times[1:]), "peak_rss_growth_mb": (peak - base) / 2**20,
                  "cuda_max_allocated_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None}}))
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if p.returncode:
        sys.exit(p.stderr[-2000:])
    return json.loads(p.stdout)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rows", type=Path)
    ap.add_argument("--workdir", type=Path, default=Path("runs/bench-search"))
    ap.add_argument("--fbnet-epochs", type=int, default=8)
    ap.add_argument("--retrain-epochs", type=int, default=5)
    a = ap.parse_args()
    w = a.workdir
    pred = w / "predictor.pt"
    fit = nasctl("fit-predictor", a.rows, "-o", pred)
    lat = pd.read_parquet(a.rows).query("status == 'ok'").latency_ms
    out: dict = {"predictor": {"rows": fit["rows"], "chosen": fit["chosen"], "test_mape": fit["test"]["default"]["mape"]}}

    # 1. one search per target
    targets = [round(float(lat.quantile(q)), 2) for q in (0.25, 0.5, 0.75)]
    hits = []
    for t in targets:
        run = w / f"lightnas-{t}"
        s = nasctl("search", "--predictor", pred, "--target-ms", t, *COMMON, "--verify", "local", "-o", run, ok=(0, 1))
        rounds = [{"predicted_ms": r["predicted"]["latency_ms"], "measured_ms": r["measured"]["latency_ms"],
                   "gap": r["gap"]["latency_ms"], "met": r["met"]} for r in s["verify"]]
        hits.append({"target_ms": t, "arch": s["arch"], "rounds": rounds, "within_3pct": rounds[-1]["met"],
                     "wall_s": s["wall_s"], "lambda_per_epoch": lambda_trajectory(run)})
    out["targets"] = hits

    # 2. FBNet λ sweep on the middle target
    t = targets[1]
    lo, hi, sweep = math.log(0.01), math.log(10.0), []
    for _ in range(6):
        lam = round(math.exp((lo + hi) / 2), 4)
        s = nasctl("search", "--method", "fbnet", "--lambda", lam, "--predictor", pred, "--target-ms", t, *COMMON,
                   "--epochs", a.fbnet_epochs, "--warmup-epochs", 1, "-o", w / f"fbnet-{lam}")
        p = s["targets"][0]["predicted"]
        sweep.append({"lambda": lam, "predicted_ms": p, "wall_s": s["wall_s"]})
        if abs(p / t - 1) <= 0.03:
            v = nasctl("search", "--method", "fbnet", "--lambda", lam, "--predictor", pred, "--target-ms", t, *COMMON,
                       "--epochs", a.fbnet_epochs, "--warmup-epochs", 1, "--verify", "local", "--no-calibrate",
                       "-o", w / f"fbnet-{lam}-verify", ok=(0, 1))
            sweep[-1]["measured_ms"] = v["verify"][0]["measured"]["latency_ms"]
            break
        lo, hi = (math.log(lam), hi) if p > t else (lo, math.log(lam))  # too slow: more λ
    out["fbnet_sweep"] = {"target_ms": t, "epochs": a.fbnet_epochs, "searches": len(sweep),
                          "reached": abs(sweep[-1]["predicted_ms"] / t - 1) <= 0.03, "runs": sweep,
                          "lightnas_searches": 1}

    # 3. single- against multi-path
    single, multi = cost_probe("lightnas"), cost_probe("fbnet")
    out["single_vs_multi"] = {"lightnas": single, "fbnet": multi,
                              "memory_ratio": multi["peak_rss_growth_mb"] / single["peak_rss_growth_mb"],
                              "step_time_ratio": multi["step_s_median"] / single["step_s_median"]}

    # 4. accuracy at the middle target against random, same budget, same retrain recipe
    rnd = nasctl("search", "--method", "random", "--predictor", pred, "--target-ms", t, *COMMON,
                 "--verify", "local", "--no-calibrate", "-o", w / "random", ok=(0, 1))
    acc = {}
    for name, run in (("lightnas", w / f"lightnas-{t}"), ("random", w / "random")):
        r = nasctl("retrain", run / "arch.json", "--data", "digits", "--epochs", a.retrain_epochs, "-o", w / f"retrain-{name}")
        acc[name] = {"arch": json.loads((run / "arch.json").read_text())["arch"], "top1": r["top1"]}
    acc["random"]["measured_ms"] = rnd["verify"][0]["measured"]["latency_ms"]
    acc["lightnas"]["measured_ms"] = hits[1]["rounds"][-1]["measured_ms"]
    out["accuracy_vs_random"] = {"target_ms": t, "retrain_epochs": a.retrain_epochs, **acc}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
