"""Issue-8 figures: the other published methods beside LightNAS, on one target, on this device.

Each method searches once to the same latency target (the median of the measured rows) with
`--verify local` and the built-in data: predicted and measured latency, wall time, and the peak
resident memory of the search process (from the kernel's accounting of that one child).
Prints one JSON object. Usage: python benchmarks/methods.py ROWS.parquet [--workdir DIR]
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


def search(method: str, pred: Path, target: float, out: Path) -> dict:
    """One search as a child process; wait4 gives that child's own peak RSS."""
    args = [sys.executable, "-m", "nasctl", "search", "--method", method, "--predictor", str(pred), "--target-ms",
            str(target), *COMMON, "--verify", "local", "-o", str(out), "--json", "-q"]
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
    return {"arch": s["arch"], "rounds": rounds, "within_3pct": rounds[-1]["met"], "search_wall_s": s["wall_s"],
            "process_wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rows", type=Path)
    ap.add_argument("--workdir", type=Path, default=Path("runs/bench-methods"))
    a = ap.parse_args()
    pred = a.workdir / "predictor.pt"
    fit = nasctl("fit-predictor", a.rows, "-o", pred)
    target = round(float(pd.read_parquet(a.rows).query("status == 'ok'").latency_ms.median()), 2)
    out = {"predictor": {"rows": fit["rows"], "chosen": fit["chosen"]}, "target_ms": target,
           "methods": {m: search(m, pred, target, a.workdir / m) for m in METHODS}}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
