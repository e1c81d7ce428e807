"""Issue-38 acceptance: does one `nasctl search --verify` land within ±3% of its target, at any
target and seed?

The recipe: `sample --space proxyless --n 400 --seed 3`, `profile --device local` (224x224, the
space's deployment config), the default `fit-predictor`, then `search --predictor p.pt
--target-ms T --data digits --verify local --seed S` at the 25th/50th/75th percentile of the
measured latency, for each seed. Per search: exit code, the round-1 and final gap, the number
of verify rounds (and the nets the calibration round measured), the wall time, the device
measurements (verify.parquet's rows, re-measures of a disturbed device included), λ at the end,
and whether `derive` changed the argmax.

With --remeasure, every net a verify measured is profiled once more afterwards (`profile --device
local`, all in one session): the verify's figure against an independent one of the same net, at
the device's base speed; a verify that a disturbance fooled shows here.

Resumable: the rows, the predictor and each finished search (its result.json) are kept in the
workdir and reused. Prints one JSON object.

Usage: python benchmarks/targets.py [--workdir DIR] [--seeds 5] [-- extra search options]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from clirun import nasctl

QUANTILES = (0.25, 0.5, 0.75)


def profile(w: Path) -> Path:
    """The recipe's rows; a profile that ends with error or disturbed rows is run once more
    with --retry-errors, as the quickstart does."""
    archs, rows = w / "archs.parquet", w / "latency.parquet"
    if not archs.exists():
        nasctl("sample", "--space", "proxyless", "--n", 400, "--seed", 3, "-o", archs)
    got = nasctl("profile", "--device", "local", "--archs", archs, "-o", rows, ok=(0, 1))
    if got.get("errors") or got.get("disturbed"):
        nasctl("profile", "--device", "local", "--archs", archs, "-o", rows, "--retry-errors", ok=(0, 1))
    return rows


def one_search(run: Path, pred: Path, target: float, seed: int, extra: list[str]) -> dict:
    done = run / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "nasctl", "search", "--predictor", str(pred), "--target-ms", str(target),
                        "--data", "digits", "--verify", "local", "--seed", str(seed), *extra, "-o", str(run), "--json", "-q"],
                       capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode not in (0, 1, 4):
        sys.exit(f"search at {target} ms, seed {seed} failed ({p.returncode}): {p.stderr.strip()}")
    doc = json.loads((run / "arch.json").read_text())
    verify = pd.read_parquet(run / "verify.parquet")
    rounds = [{"arch": r["arch"], "predicted_ms": r["predicted"]["latency_ms"], "measured_ms": r["measured"]["latency_ms"],
               "gap": r["gap"]["latency_ms"], "met": r["met"], "offset_ms": r["offsets"]["latency_ms"],
               "tried": [{"arch": x["arch"], "predicted_ms": x["predicted"]["latency_ms"], "measured_ms": x["measured"]["latency_ms"],
                          "gap": x["gap"]["latency_ms"]} for x in r.get("tried", [])]} for r in doc["verify"]]
    t = doc["targets"][0]
    out = {"target_ms": target, "seed": seed, "exit": p.returncode, "verify_status": doc["verify_status"],
           "rounds": len(rounds), "round1_gap": rounds[0]["gap"] if rounds else None,
           "final_gap": rounds[-1]["gap"] if rounds else None, "met": bool(rounds and rounds[-1]["met"]),
           "met_round1": bool(rounds and rounds[0]["met"]), "wall_s": round(wall, 1),
           "device_measurements": len(verify), "disturbed_measurements": int((verify.status != "ok").sum()),
           "lambda_end": t["lambda"], "derived": doc["argmax"] != doc["arch"], "verify": rounds}
    done.write_text(json.dumps(out, indent=1))
    return out


def remeasure(w: Path, searches: list[dict]) -> dict:
    """Profile every verified net again; each verify figure against the new one (base speed)."""
    nets = pd.DataFrame({"arch": sorted({r["arch"] for s in searches for r in s["verify"]})})
    nets.to_parquet(w / "verified.parquet")
    nasctl("profile", "--device", "local", "--space", "proxyless", "--archs", w / "verified.parquet", "-o", w / "remeasured.parquet",
           ok=(0, 1))
    got = pd.read_parquet(w / "remeasured.parquet").query("status == 'ok'")
    again = dict(zip(got.arch, got.latency_ms / got.drift))
    pairs = [{"target_ms": s["target_ms"], "seed": s["seed"], "round": i + 1, "verify_ms": r["measured_ms"],
              "again_ms": again.get(r["arch"]), "ratio": r["measured_ms"] / again[r["arch"]] - 1 if r["arch"] in again else None}
             for s in searches for i, r in enumerate(s["verify"])]
    ratios = [abs(p["ratio"]) for p in pairs if p["ratio"] is not None]
    return {"nets": len(nets), "remeasured": len(again), "abs_diff_median": float(pd.Series(ratios).median()),
            "abs_diff_max": max(ratios), "over_3pct": sum(r > 0.03 for r in ratios), "pairs": pairs}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=Path("runs/targets"))
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--remeasure", action="store_true")
    ap.add_argument("extra", nargs="*", help="more search options, after --")
    a = ap.parse_args()
    w = a.workdir
    w.mkdir(parents=True, exist_ok=True)
    rows = profile(w)
    pred = w / "predictor.pt"
    fit = json.loads((w / "fit.json").read_text()) if (w / "fit.json").exists() else None
    if fit is None:
        fit = nasctl("fit-predictor", rows, "-o", pred)
        (w / "fit.json").write_text(json.dumps(fit))
    lat = pd.read_parquet(rows).query("status == 'ok'").latency_ms
    targets = [round(float(lat.quantile(q)), 2) for q in QUANTILES]
    searches = [one_search(w / f"search-{t}-s{s}", pred, t, s, a.extra) for s in range(a.seeds) for t in targets]
    n = len(searches)
    remeasured = remeasure(w, searches) if a.remeasure else None
    print(json.dumps({
        "rows": int(len(lat)), "predictor": {"chosen": fit["chosen"], "test_mape": fit["test"]["default"]["mape"]},
        "targets_ms": targets, "search_options": a.extra,
        "summary": {"searches": n, "met": sum(s["met"] for s in searches), "met_round1": sum(s["met_round1"] for s in searches),
                    "at_most_2_rounds": sum(s["rounds"] <= 2 for s in searches), "exit_1": sum(s["exit"] == 1 for s in searches),
                    "unverified": sum(s["exit"] == 4 for s in searches),
                    "device_measurements_mean": sum(s["device_measurements"] for s in searches) / n,
                    "wall_s_mean": sum(s["wall_s"] for s in searches) / n},
        "remeasured": remeasured, "searches": searches}, indent=1))


if __name__ == "__main__":
    main()
