#!/usr/bin/env bash
# The main job on the local CPU, using only public nasctl subcommands (it doubles as the example
# of shell/CI use): sample archs, measure them with onnxruntime, and show that a rerun resumes.
set -euo pipefail
RUN=${RUN:-runs/quickstart}
N=${N:-20}
mkdir -p "$RUN"

nasctl sample --space proxyless --n "$N" --seed 0 --stratify macs -o "$RUN/archs.parquet"
nasctl profile --device local-cpu --archs "$RUN/archs.parquet" -o "$RUN/latency.parquet"
# A rerun measures nothing twice: every arch is already stored for this device config.
nasctl profile --device local-cpu --archs "$RUN/archs.parquet" -o "$RUN/latency.parquet" --json

python - "$RUN/latency.parquet" <<'PY'
import sys
import pandas as pd
from rich.console import Console
from rich.table import Table

df = pd.read_parquet(sys.argv[1]).sort_values("macs")
t = Table(title=f"{len(df)} proxyless archs on {df.cpu_model.iloc[0]} ({df.runtime.iloc[0]} {df.runtime_version.iloc[0]}, {df.threads.iloc[0]} thread)")
for col in ("arch_id", "MMACs", "params (M)", "median ms", "p90 ms", "CV", "runs"):
    t.add_column(col, justify="right")
for r in df.itertuples():
    t.add_row(r.arch_id, f"{r.macs / 1e6:.0f}", f"{r.params / 1e6:.2f}", f"{r.latency_ms:.2f}",
              f"{r.latency_p90_ms:.2f}", f"{r.latency_cv:.1%}", str(r.n_runs))
Console().print(t)
PY
