"""Issue-17 figures: does the reference net keep measurements true while the device drifts?

    python benchmarks/drift.py inject [--workdir runs/drift]
        20 archs profiled quietly, then again with a CPU-bound co-runner pinned (taskset) to the
        agent's core for the whole run: median relative difference of raw medians and of
        drift-corrected ones. Goal: corrected <= 3% while raw >= 20%.
    python benchmarks/drift.py time --phase a|b [--workdir runs/drift]
        the same 20 archs at two times >= 30 min apart (phase b refuses to run sooner):
        median drift, and raw against corrected agreement and Spearman rho.
    python benchmarks/drift.py cost [--workdir runs/drift]
        a 100-arch profile: the wall time its reference timings took, over the rest. Goal <= 10%.
    python benchmarks/drift.py verify [--workdir runs/drift]
        one net's `search --verify`-style interleaved verify 10 times, with the co-runner on
        partway through some: how many results are flagged or corrected, and how many would have
        fed a wrong calibration. Goal: 0 wrong calibrations.

The device is this CPU through onnxruntime, 1 thread, the agent pinned to CPU 1 ([runtime_options]
cpus), 224x224, batch 1. The co-runner shares the agent's own core, so the agent's test for load
on its *free* cores would rightly call every loaded row disturbed and time it again; the profile
turns that test off (max_other_busy above 1), because what is measured here is the correction.
Prints one JSON object; results go to benchmarks/results/drift_<mode>.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from clirun import nasctl

AGENT_CPU = 1
PROFILE = f"""name = "drift-cpu"
description = "this CPU, onnxruntime, 1 thread pinned to CPU {AGENT_CPU}; free-core load test off"
transport = "local"
runtime = "onnxruntime"
[model]
batch = 1
[runtime_options]
threads = 1
cpus = [{AGENT_CPU}]
[protocol]
max_other_busy = 1.01
interference_retries = 0
"""
RESULTS = Path(__file__).parent / "results"


def co_runner() -> subprocess.Popen:
    """A busy loop on the agent's core: the agent gets about half of it."""
    return subprocess.Popen(["taskset", "-c", str(AGENT_CPU), sys.executable, "-c", "while True: pass"])


def setup(work: Path, n: int, seed: int) -> tuple[Path, Path]:
    work.mkdir(parents=True, exist_ok=True)
    dev = work / "drift-cpu.toml"
    dev.write_text(PROFILE)
    archs = work / f"archs-{n}-{seed}.parquet"
    if not archs.exists():
        nasctl("sample", "--n", n, "--seed", seed, "--stratify", "macs", "--resolution", 224, "-o", archs)
    return dev, archs


def profile(dev: Path, archs: Path, out: Path, ok=(0,)) -> tuple[dict, pd.DataFrame]:
    out.unlink(missing_ok=True)
    out.with_suffix(".ref.parquet").unlink(missing_ok=True)
    s = nasctl("profile", "--device", dev, "--archs", archs, "-o", out, ok=ok)
    return s, pd.read_parquet(out).set_index("arch_id")


def compare(a: pd.DataFrame, b: pd.DataFrame) -> dict:
    b = b.loc[a.index]
    raw = b["latency_ms"] / a["latency_ms"]
    cor = (b["latency_ms"] / b["drift"]) / (a["latency_ms"] / a["drift"])
    return {"archs": len(a),
            "raw_median_rel_diff": float((raw - 1).abs().median()), "raw_median_ratio": float(raw.median()),
            "corrected_median_rel_diff": float((cor - 1).abs().median()), "corrected_median_ratio": float(cor.median()),
            "corrected_max_rel_diff": float((cor - 1).abs().max()),
            "drift_a": [float(a["drift"].min()), float(a["drift"].max())],
            "drift_b": [float(b["drift"].min()), float(b["drift"].max())],
            "spearman_rho_raw": float(stats.spearmanr(a["latency_ms"], b["latency_ms"])[0]),
            "spearman_rho_corrected": float(stats.spearmanr(a["latency_ms"] / a["drift"], b["latency_ms"] / b["drift"])[0])}


def inject(work: Path) -> dict:
    dev, archs = setup(work, 20, 17)
    _, quiet = profile(dev, archs, work / "inject-quiet.parquet")
    hog = co_runner()
    try:
        time.sleep(1)
        _, loaded = profile(dev, archs, work / "inject-loaded.parquet")
    finally:
        hog.kill()
    res = compare(quiet, loaded)
    res["goal_met"] = res["corrected_median_rel_diff"] <= 0.03 and res["raw_median_rel_diff"] >= 0.20
    return res


def drift_over_time(work: Path, phase: str) -> dict:
    dev, archs = setup(work, 20, 18)
    out, stamp = work / f"time-{phase}.parquet", work / "time-a.started"
    if phase == "a":
        stamp.write_text(datetime.now(timezone.utc).isoformat())
        profile(dev, archs, out)
        return {"phase": "a", "started": stamp.read_text()}
    if not stamp.exists():
        sys.exit("run --phase a first")
    waited = (datetime.now(timezone.utc) - datetime.fromisoformat(stamp.read_text())).total_seconds()
    if waited < 1800:
        sys.exit(f"phase b needs >= 30 min after phase a; {waited / 60:.0f} min have passed")
    _, b = profile(dev, archs, out)
    res = {"minutes_apart": waited / 60, **compare(pd.read_parquet(work / "time-a.parquet").set_index("arch_id"), b)}
    return res


def cost(work: Path) -> dict:
    dev, archs = setup(work, 100, 19)
    s, rows = profile(dev, archs, work / "cost.parquet")
    return {"archs": s["measured"], "wall_s": s["wall_s"], "references": s["references"], "reference_s": s["reference_s"],
            "extra_share": s["reference_s"] / (s["wall_s"] - s["reference_s"]),
            "goal_met": s["reference_s"] / (s["wall_s"] - s["reference_s"]) <= 0.10,
            "median_latency_ms": float(rows["latency_ms"].median())}


def verify(work: Path, runs: int = 10, tolerance: float = 0.03) -> dict:
    """The truth is a quiet interleaved verify; then `runs` more, the co-runner switched on at a
    random moment inside 6 of them. Without this issue a verify was two plain timings, the lower
    kept, and this load (on the agent's own core) was not seen: that figure is the first two
    candidate timings' minimum. A result feeds the calibration round when its status is ok; it
    is wrong when it is off the truth (the median of the quiet ones) by more than the search's
    default tolerance (3%)."""
    import threading

    from nasctl.device import load_device
    from nasctl.profile import Store
    from nasctl.profile.verify import verify_interleaved
    from nasctl.space.archfile import read_archs

    dev_path, archs = setup(work, 20, 17)
    dev = load_device(str(dev_path))
    _, pool = read_archs(archs)
    arch = pool[len(pool) // 2]
    store = Store(work / "verify.parquet")
    truth = verify_interleaved(arch, dev, store)  # quiet; flagged or not, one of the quiet figures
    rng, results = np.random.default_rng(17), []
    for i in range(runs):
        load_at = float(rng.uniform(2, 9)) if i % 5 not in (0, 3) else None  # 6 of 10 loaded partway
        hog: list = []
        timer = threading.Timer(load_at, lambda started=hog: started.append(co_runner())) if load_at is not None else None
        if timer:
            timer.start()
        try:
            row = verify_interleaved(arch, dev, store)
        finally:
            if timer:
                timer.cancel()
            for h in hog:
                h.kill()
        old = min(row["verify_timings_ms"][:2])
        results.append({"co_runner_at_s": load_at, "co_runner_ran": bool(hog), "status": row["status"],
                        "reason": row.get("disturbed_reason"), "corrected_ms": row["latency_ms"], "raw_ms": row["latency_raw_ms"],
                        "drift": row["drift"], "old_ms": old})
        time.sleep(1)
    # The quiet figure varies by a few % from verify to verify here: the truth is the median of all quiet ones.
    quiet = [truth["latency_ms"]] + [r["corrected_ms"] for r in results if not r["co_runner_ran"]]
    truth["latency_ms"] = float(np.median(quiet))
    for r in results:
        r["wrong_calibration"] = r["status"] == "ok" and abs(r["corrected_ms"] / truth["latency_ms"] - 1) > tolerance
        r["old_wrong_calibration"] = abs(r["old_ms"] / truth["latency_ms"] - 1) > tolerance
    loaded = [r for r in results if r["co_runner_ran"]]
    return {"arch": arch.string, "truth_ms": truth["latency_ms"], "quiet_ms": quiet, "tolerance": tolerance, "runs": results,
            "loaded": len(loaded), "flagged": sum(r["status"] != "ok" for r in results),
            "corrected_and_kept": sum(r["status"] == "ok" and r["drift"] is not None and abs(r["drift"] - 1) > tolerance for r in results),
            "wrong_calibrations": sum(r["wrong_calibration"] for r in results),
            "old_wrong_calibrations": sum(r["old_wrong_calibration"] for r in results),
            "goal_met": not any(r["wrong_calibration"] for r in results)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=("inject", "time", "cost", "verify"))
    ap.add_argument("--phase", choices=("a", "b"))
    ap.add_argument("--workdir", type=Path, default=Path("runs/drift"))
    a = ap.parse_args()
    t0 = time.perf_counter()
    if a.mode == "inject":
        res = inject(a.workdir)
    elif a.mode == "time":
        if not a.phase:
            sys.exit("time needs --phase a or b")
        res = drift_over_time(a.workdir, a.phase)
    elif a.mode == "cost":
        res = cost(a.workdir)
    else:
        res = verify(a.workdir)
    res = {"mode": a.mode, "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "wall_s": time.perf_counter() - t0, **res}
    RESULTS.mkdir(exist_ok=True)
    if a.mode != "time" or a.phase == "b":
        (RESULTS / f"drift_{a.mode}.json").write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
