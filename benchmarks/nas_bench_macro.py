"""Issue-35 figure 2: all 6,561 NAS-Bench-Macro nets measured on this CPU (onnxruntime, 32x32,
batch 1, 1 thread, reference net and drift correction: the `local` device profile).

`profile` writes the archs file (every key of the shipped table, as it is: identities moved
within a stage are different nets on a device even where the table gives one accuracy) and runs
`nasctl profile` on it. The store is resumable: run it again after an interruption and it
measures only what is missing; `--retry-errors` then measures disturbed rows again. Each run's
command, start, end and wall time are appended to RUN/profile.log.

Usage: python benchmarks/nas_bench_macro.py profile [--run benchmarks/results/nas-bench-macro] [--retry-errors]
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from nasctl.tables import write_table
from nasctl.tabular import table_rows


def profile(run: Path, retry_errors: bool) -> int:
    run.mkdir(parents=True, exist_ok=True)
    archs = run / "archs.parquet"
    if not archs.exists():
        write_table(table_rows("nas-bench-macro")[["arch_id", "arch", "key", "space"]], archs)
    cmd = [sys.executable, "-m", "nasctl", "profile", "--device", "local", "--archs", str(archs),
           "-o", str(run / "latency.parquet"), "--json", "-q", *(["--retry-errors"] if retry_errors else [])]
    t0 = time.time()
    with open(run / "profile.json", "a") as out:
        code = subprocess.run(cmd, stdout=out).returncode
    with open(run / "profile.log", "a") as log:
        log.write(f"{datetime.now(timezone.utc):%FT%TZ} exit {code} after {time.time() - t0:.0f} s: {shlex.join(cmd[1:])}\n")
    return code


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="step", required=True)
    p = sub.add_parser("profile")
    p.add_argument("--run", type=Path, default=Path("benchmarks/results/nas-bench-macro"))
    p.add_argument("--retry-errors", action="store_true")
    a = ap.parse_args()
    return profile(a.run, a.retry_errors)


if __name__ == "__main__":
    sys.exit(main())
