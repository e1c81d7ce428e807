"""Issue-8 figures: the other published methods beside LightNAS, on one target, on this device.

Each method searches once to the same latency target (the median of the measured rows) with
`--verify local` and the built-in data: predicted and measured latency, wall time, and the peak
resident memory of the search process (from the kernel's accounting of that one child).
lightnas and singlepath search the proxyless space (ROWS); la-darts the darts cell space
(--darts-rows, its own target: the median of those rows), with learned and with fixed λ, and
as DCA-NAS with a --max-params budget (DCA_BUDGET) on top of the same target. lightnas itself
does not search a cell space; la-darts with the learned λ is its objective there.
Prints one JSON object.
Usage: python benchmarks/methods.py [ROWS.parquet] [--darts-rows DARTS.parquet] [--workdir DIR] [--epochs N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from clirun import nasctl

METHODS = ("lightnas", "singlepath")
COMMON = ["--resolution", "16"]
DCA_BUDGET = "0.2M"


def search(method: str, pred: Path, target: float, out: Path, extra: tuple = ()) -> dict:
    """One search as a child process; wait4 gives that child's own peak RSS."""
    args = [sys.executable, "-m", "nasctl", "search", "--method", method, "--predictor", str(pred), "--target-ms",
            str(target), *COMMON, *map(str, extra), "--verify", "local", "-o", str(out), "--json", "-q"]
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as o, tempfile.TemporaryFile("w+") as e:
        p = subprocess.Popen(args, stdout=o, stderr=e, text=True)
        _, status, usage = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        code = os.waitstatus_to_exitcode(status)
        o.seek(0), e.seek(0)
        stdout, stderr = o.read(), e.read()
    if code not in (0, 1):
        sys.exit(f"{method}: nasctl search failed ({code}): {stderr.strip()}")
    s = json.loads(stdout)
    rounds = [{"predicted_ms": r["predicted"]["latency_ms"], "measured_ms": r["measured"]["latency_ms"],
               "gap": r["gap"]["latency_ms"], "met": r["met"]} for r in s["verify"]]
    return {"arch": s["arch"], "params_m": s["params"] / 1e6, "rounds": rounds, "within_3pct": rounds[-1]["met"], "search_wall_s": s["wall_s"],
            "process_wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rows", type=Path, nargs="?")
    ap.add_argument("--darts-rows", type=Path)
    ap.add_argument("--workdir", type=Path, default=Path("runs/bench-methods"))
    ap.add_argument("--epochs", type=int, default=30)
    a = ap.parse_args()
    out = {"epochs": a.epochs}
    runs = [("proxyless", a.rows, [(m, m, ()) for m in METHODS]),
            ("darts", a.darts_rows, [("la-darts", "la-darts", ("--space", "darts")),
                                     ("la-darts-fixed-lambda", "la-darts", ("--space", "darts", "--lambda", "0.5")),
                                     ("dca-nas", "la-darts", ("--space", "darts", "--max-params", DCA_BUDGET))])]
    for space, rows, methods in runs:
        if rows is None:
            continue
        pred = a.workdir / f"{space}-predictor.pt"
        fit = nasctl("fit-predictor", rows, "-o", pred)
        target = round(float(pd.read_parquet(rows).query("status == 'ok'").latency_ms.median()), 2)
        out[space] = {"predictor": {"rows": fit["rows"], "chosen": fit["chosen"], "test": fit["test"]["default"]}, "target_ms": target,
                      "methods": {name: search(m, pred, target, a.workdir / name, (*extra, "--epochs", a.epochs)) for name, m, extra in methods}}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
