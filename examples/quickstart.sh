#!/usr/bin/env bash
# The main job on the local CPU, using only public nasctl subcommands (it doubles as the example
# of shell/CI use): sample archs, measure them with onnxruntime, resume, fit a latency predictor,
# then train the arch it predicts fastest on the built-in digits data and export it to ONNX.
# (`nasctl search` takes the place of "predicted fastest" once it lands.)
set -euo pipefail
RUN=${RUN:-runs/quickstart}
N=${N:-60}
EPOCHS=${EPOCHS:-3}
mkdir -p "$RUN"

nasctl sample --space proxyless --n "$N" --seed 0 --stratify macs -o "$RUN/archs.parquet"
# Exit 1: some archs ended as error or disturbed rows (another process loaded the CPU while they
# were timed). Measure those once more; a second failure stops the job.
nasctl profile --device local-cpu --archs "$RUN/archs.parquet" -o "$RUN/latency.parquet" ||
    { [ $? -eq 1 ] && nasctl profile --device local-cpu --archs "$RUN/archs.parquet" -o "$RUN/latency.parquet" --retry-errors; }
# A rerun measures nothing twice: every arch is already stored for this device config.
nasctl profile --device local-cpu --archs "$RUN/archs.parquet" -o "$RUN/latency.parquet" --json > "$RUN/resume.json"
nasctl fit-predictor "$RUN/latency.parquet" --metric latency_ms -o "$RUN/predictor.pt"
nasctl predict "$RUN/predictor.pt" "$RUN/archs.parquet" -o "$RUN/predicted.parquet"

ARCH=$(python -c "import pandas as pd, sys; d = pd.read_parquet(sys.argv[1]); print(d.sort_values('pred_latency_ms').arch.iloc[0])" "$RUN/predicted.parquet")
nasctl retrain "$ARCH" --space proxyless --data digits --epochs "$EPOCHS" -o "$RUN/model"
nasctl export "$RUN/model" --format onnx -o "$RUN/model.onnx"

python - "$RUN" <<'PY'
import json, sys
from pathlib import Path
import pandas as pd
from rich.console import Console
from rich.table import Table

run = Path(sys.argv[1])
lat = pd.read_parquet(run / "latency.parquet")
pred = json.loads((run / "predictor.json").read_text())
arch = json.loads((run / "model" / "arch.json").read_text())
metrics = pd.read_csv(run / "model" / "metrics.csv")
onnx = json.loads((run / "model.onnx.json").read_text())
resume = json.loads((run / "resume.json").read_text())
t = Table(title=f"nasctl quickstart on {lat.cpu_model.iloc[0]}", show_header=False)
t.add_row("archs measured", f"{(lat.status == 'ok').sum()} ({lat.latency_ms.min():.2f}-{lat.latency_ms.max():.2f} ms, {lat.runtime.iloc[0]} {lat.runtime_version.iloc[0]}, {lat.threads.iloc[0]} thread)")
t.add_row("rerun", f"{resume['measured']} measured, {resume['skipped']} skipped")
d, l = pred["test"]["default"], pred["test"]["lut"]
t.add_row("predictor (held-out)", f"{pred['chosen']}: MAPE {d['mape']:.2%}, tau {d['kendall_tau']:.3f}, {d['within_10']:.0%} within 10%  (LUT: MAPE {l['mape']:.2%}, tau {l['kendall_tau']:.3f})")
t.add_row("trained arch", arch["arch"])
t.add_row("digits accuracy", f"top-1 {metrics.top1.iloc[-1]:.1%} after {len(metrics)} epochs")
t.add_row("ONNX", f"{run / 'model.onnx'} (parity {onnx['parity_max_abs_diff']:.1e})")
Console().print(t)
PY
