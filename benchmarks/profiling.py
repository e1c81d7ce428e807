"""Issue-2 figures for `nasctl profile --device local-cpu`, printed as one JSON object.

1. throughput: 100 proxyless archs at 224x224, batch 1: archs/min and the overhead share
   1 - (time inside timed runs / wall time);
2. stability: the same 20 archs profiled in two separate runs: median relative drift, Spearman rho;
3. kill -9 in the middle of a 50-arch run, then a rerun: rows lost and duplicated.

Usage: python benchmarks/profiling.py [--workdir runs/bench-profiling] [--device local-cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
from scipy import stats

from clirun import nasctl


def throughput(work: Path, device: str) -> dict:
    archs, out = work / "t-archs.parquet", work / "t-latency.parquet"
    out.unlink(missing_ok=True)
    nasctl("sample", "--n", 100, "--seed", 100, "-o", archs)
    t0 = time.perf_counter()
    s = nasctl("profile", "--device", device, "--archs", archs, "-o", out)
    wall = time.perf_counter() - t0  # the whole command: start-up, exports, agent, writes
    return {
        "archs": s["measured"],
        "archs_per_min": 60 * s["measured"] / wall,
        "wall_s": wall,
        "timed_s": s["timed_s"],
        "overhead": 1 - s["timed_s"] / wall,
        "overhead_in_loop": s["overhead"],
        "median_latency_ms": float(pd.read_parquet(out)["latency_ms"].median()),
    }


def stability(work: Path, device: str) -> dict:
    archs = work / "s-archs.parquet"
    nasctl("sample", "--n", 20, "--seed", 200, "--stratify", "macs", "-o", archs)
    runs = []
    for i in (1, 2):
        out = work / f"s-latency-{i}.parquet"
        out.unlink(missing_ok=True)
        nasctl("profile", "--device", device, "--archs", archs, "-o", out)
        runs.append(pd.read_parquet(out).set_index("arch_id")["latency_ms"])
    a, b = runs[0], runs[1].loc[runs[0].index]
    drift = (b - a).abs() / a
    return {
        "archs": len(a),
        "median_rel_drift": float(drift.median()),
        "max_rel_drift": float(drift.max()),
        "spearman_rho": float(stats.spearmanr(a, b).statistic),
        "latency_range_ms": [float(a.min()), float(a.max())],
    }


def kill_resume(work: Path, device: str) -> dict:
    archs, out = work / "k-archs.parquet", work / "k-latency.parquet"
    out.unlink(missing_ok=True)
    nasctl("sample", "--n", 50, "--seed", 300, "-o", archs)
    cmd = [sys.executable, "-m", "nasctl", "profile", "--device", device, "--archs", str(archs), "-o", str(out), "-q"]
    proc = subprocess.Popen(cmd, start_new_session=True)
    while not (out.exists() and len(pd.read_parquet(out)) >= 25):
        time.sleep(0.1)
    time.sleep(0.5)  # land somewhere inside an arch's timing
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = len(pd.read_parquet(out))
    s = nasctl("profile", "--device", device, "--archs", archs, "-o", out)
    df = pd.read_parquet(out)
    expected = set(pd.read_parquet(archs)["arch_id"])
    return {
        "rows_before_kill": before,
        "remeasured_after": s["measured"],
        "rows_lost": len(expected - set(df["arch_id"])),
        "rows_duplicated": int(len(df) - df["arch_id"].nunique()),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=Path("runs/bench-profiling"))
    ap.add_argument("--device", default="local-cpu")
    a = ap.parse_args()
    a.workdir.mkdir(parents=True, exist_ok=True)
    print(json.dumps({
        "device": a.device,
        "cpu_count": os.cpu_count(),
        "throughput": throughput(a.workdir, a.device),
        "stability": stability(a.workdir, a.device),
        "kill_resume": kill_resume(a.workdir, a.device),
    }, indent=2))


if __name__ == "__main__":
    main()
