"""Issue-35 figure 2: all 6,561 NAS-Bench-Macro nets measured on this CPU (onnxruntime, 32x32,
batch 1, 1 thread, reference net and drift correction: nas-bench-macro-cpu.toml, the `local`
device with a 0.25 s timing window).

`profile` writes the archs file (every key of the shipped table, as it is: identities moved
within a stage are different nets on a device even where the table gives one accuracy) and runs
`nasctl profile` on it. The store is resumable: run it again after an interruption and it
measures only what is missing; `--retry-errors` then measures disturbed rows again. Each run's
command, start, end and wall time are appended to RUN/profile.log.

`fit` fits the default predictor and the LUT on a seeded 80% of the ok rows and scores them on
the other 20% (MAPE, Kendall tau, share within +-10%), and measures how far apart in latency are
keys that the table gives one accuracy; it writes benchmarks/results/nas_bench_macro.json. After
`profile --repeat 300` it also scores a second measurement of 300 keys against the first (the
same figures): the agreement a predictor cannot exceed on this machine.

Usage: python benchmarks/nas_bench_macro.py profile [--run benchmarks/results/nas-bench-macro] [--retry-errors] [--repeat N]
       python benchmarks/nas_bench_macro.py fit [--run benchmarks/results/nas-bench-macro]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from nasctl.predict import fit_predictor, load_rows
from nasctl.predict.metrics import figures
from nasctl.space import load_space
from nasctl.tables import read_table, write_table
from nasctl.tabular import table_rows

DEVICE = Path(__file__).with_name("nas-bench-macro-cpu.toml")
_SPACE = load_space("nas-bench-macro")


def profile(run: Path, retry_errors: bool, repeat: int = 0) -> int:
    """All keys into RUN/latency.parquet; with `repeat`, that many of them (drawn with seed 0)
    once more into RUN/repeat.parquet: how far two measurements of one net agree here."""
    run.mkdir(parents=True, exist_ok=True)
    archs = run / "archs.parquet"
    if not archs.exists():
        write_table(table_rows("nas-bench-macro")[["arch_id", "arch", "key", "space"]], archs)
    store = run / "latency.parquet"
    if repeat:
        write_table(read_table(archs).sample(repeat, random_state=0), run / "repeat-archs.parquet")
        archs, store = run / "repeat-archs.parquet", run / "repeat.parquet"
    cmd = [sys.executable, "-m", "nasctl", "profile", "--device", os.path.relpath(DEVICE), "--archs", str(archs),
           "-o", str(store), "--json", "-q", *(["--retry-errors"] if retry_errors else [])]
    t0 = time.time()
    with open(run / "profile.json", "a") as out:
        code = subprocess.run(cmd, stdout=out).returncode
    with open(run / "profile.log", "a") as log:
        log.write(f"{datetime.now(timezone.utc):%FT%TZ} exit {code} after {time.time() - t0:.0f} s: {shlex.join(cmd[1:])}\n")
    return code


STAGES = ((0, 2), (2, 5), (5, 8))  # the searchable layers of each stage


def trained_as(key: str) -> str:
    """The key whose result the table gives this one: a stage's first layer stays (its identity
    is a 1x1 conv where the shape changes), its later identities move to the stage's end. This
    groups the 6,561 keys into the table's 3,969 distinct results exactly."""
    return "".join(key[a] + "".join(sorted(key[a + 1 : b], key=lambda d: d == "0")) for a, b in STAGES)


def fit(run: Path) -> int:
    """Figures from the measured rows: the default predictor and the LUT on a seeded 80%, scored
    on the held-out 20% (drift-corrected, as fit-predictor does by default), and how far apart on
    this CPU are the keys that the table gives one accuracy."""
    rows = load_rows(run / "latency.parquet", "latency_ms", drift=None)
    t0 = time.time()
    _, report, _ = fit_predictor(rows, "latency_ms", 0.2, 0)
    pick = ("rmse", "mape", "kendall_tau", "spearman_rho", "within_5", "within_10")
    store = read_table(run / "latency.parquet")
    ok = store[store["status"] == "ok"].assign(y=rows.y)
    ok["trained_as"] = ok["arch"].map(lambda a: trained_as(_SPACE.key(_SPACE.parse(a))))
    groups = ok.groupby("trained_as")["y"].agg(["min", "max", "size"])
    shared = groups[groups["size"] > 1]
    if (run / "repeat.parquet").exists():  # the same nets measured twice: the noise a predictor cannot beat
        again = load_rows(run / "repeat.parquet", "latency_ms", drift=None)
        first = ok.set_index("arch_id").loc[[a.id for a in again.archs], "y"].to_numpy()
        f = figures(first, again.y)
        out_repeat = {"rows": len(first), **{k: round(f[k], 4) for k in pick}}
    else:
        out_repeat = None
    log = (run / "profile.log").read_text().splitlines() if (run / "profile.log").exists() else []
    out = {
        "rows": int(len(store)), "ok_rows": int(len(ok)), "status": store["status"].value_counts().to_dict(),
        "latency_ms": {"min": float(ok.y.min()), "median": float(ok.y.median()), "max": float(ok.y.max())},
        "drift": rows.drift, "device": str(store["device"].iloc[0]), "cpu_model": str(store["cpu_model"].iloc[0]),
        "runtime": f"{store['runtime'].iloc[0]} {store['runtime_version'].iloc[0]}", "threads": int(store["threads"].iloc[0]),
        "input_shape": str(store["input_shape"].iloc[0]),
        "profile_runs": log, "profile_wall_s": sum(int(l.split(" after ")[1].split(" s:")[0]) for l in log if "latency.parquet" in l),
        "fit": {"train_rows": report["train_rows"], "test_rows": report["test_rows"], "chosen": report["chosen"],
                "fit_s": round(time.time() - t0, 1),
                "default": {k: round(report["test"]["default"][k], 4) for k in pick},
                "lut": {k: round(report["test"]["lut"][k], 4) for k in pick}},
        "remeasured": out_repeat,
        "one_accuracy_many_nets": {
            "table_results": int(len(groups)), "results_shared_by_several_keys": int(len(shared)),
            "median_max_over_min_latency": round(float((shared["max"] / shared["min"]).median()), 4),
            "largest_max_over_min_latency": round(float((shared["max"] / shared["min"]).max()), 4)},
    }
    text = json.dumps(out, indent=2)
    (run.parent / "nas_bench_macro.json").write_text(text + "\n")
    print(text)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="step", required=True)
    p = sub.add_parser("profile")
    p.add_argument("--run", type=Path, default=Path("benchmarks/results/nas-bench-macro"))
    p.add_argument("--retry-errors", action="store_true")
    p.add_argument("--repeat", type=int, default=0, help="measure this many keys a second time (repeat.parquet)")
    f = sub.add_parser("fit")
    f.add_argument("--run", type=Path, default=Path("benchmarks/results/nas-bench-macro"))
    a = ap.parse_args()
    return profile(a.run, a.retry_errors, a.repeat) if a.step == "profile" else fit(a.run)


if __name__ == "__main__":
    sys.exit(main())
