#!/usr/bin/env bash
# The main job on the local CPU, end to end, using only public nasctl subcommands (it doubles as
# the example of shell/CI use): sample archs, measure them with onnxruntime, fit a latency
# predictor, search (LightNAS) to a target the predictor says is reachable, verify the result on
# the device, retrain it briefly on the built-in digits data, export ONNX, write the report.
#
# Two nets share one arch string here. The latency figures are of the arch at the device's
# config (ImageNet macro, 224x224, 1000 classes, batch 1): what `profile` measured and `search
# --verify` checks. The accuracy and model.onnx are of the same string built for digits (CIFAR
# macro, 32x32, 10 classes, width 0.5), which trains on this CPU in under a minute.
set -euo pipefail
RUN=${RUN:-runs/quickstart}
N=${N:-60}
SEARCH_EPOCHS=${SEARCH_EPOCHS:-30}
# The digits retrain: 4 epochs of 90 steps (batch 16), no warm-up at lr 0.02. At lr 0.1 with a
# warm-up epoch (retrain's defaults, made for ImageNet) one found net sat at chance for 2 epochs;
# this recipe had it at 92% after the first and 99% after 4 (9-10 s an epoch at width 0.5).
EPOCHS=${EPOCHS:-4}
RETRAIN=(--data digits --width-mult 0.5 --batch 16 --lr 0.02 --warmup-epochs 0 --epochs "$EPOCHS")
mkdir -p "$RUN"

nasctl sample --space proxyless --n "$N" --seed 0 --stratify macs -o "$RUN/archs.parquet"
# Exit 1: some archs ended as error or disturbed rows (another process loaded the CPU while they
# were timed). Measure those once more; a second failure stops the job.
nasctl profile --device local --archs "$RUN/archs.parquet" -o "$RUN/latency.parquet" ||
    { [ $? -eq 1 ] && nasctl profile --device local --archs "$RUN/archs.parquet" -o "$RUN/latency.parquet" --retry-errors; }
# A rerun measures nothing twice: every arch is already stored for this device config.
nasctl profile --device local --archs "$RUN/archs.parquet" -o "$RUN/latency.parquet" --json > "$RUN/resume.json"
nasctl fit-predictor "$RUN/latency.parquet" --metric latency_ms -o "$RUN/predictor.pt"

# The target: the median of what the predictor says over the sampled archs, so it is reachable.
TARGET=$(nasctl predict "$RUN/predictor.pt" "$RUN/archs.parquet" --json | python -c "import json, sys; print(round(json.load(sys.stdin)['median'], 2))")
# Exit 1: the measured latency is still outside --tolerance after the calibration round. Exit 4:
# other load kept the CPU disturbed through --verify-wait, so the arch could not be measured. Either
# way the result is written, the table below says which, and the job carries on. --verify-wait 120
# keeps a busy machine within the 10-minute budget (a CI run waited 5 min on this VM's bursts).
rc=0
nasctl search --predictor "$RUN/predictor.pt" --target-ms "$TARGET" --data digits --resolution 16 \
    --epochs "$SEARCH_EPOCHS" --verify local --verify-wait 120 -o "$RUN/search" --json > "$RUN/search.json" || rc=$?
[ "$rc" -eq 0 ] || [ "$rc" -eq 1 ] || [ "$rc" -eq 4 ] || exit "$rc"
nasctl retrain "$RUN/search/arch.json" "${RETRAIN[@]}" -o "$RUN/model"
nasctl export "$RUN/model" --format onnx -o "$RUN/model.onnx"
nasctl report "$RUN"
nasctl info "$RUN/model/arch.json" --json > "$RUN/model/info.json"

python - "$RUN" <<'PY'
import json, sys
from pathlib import Path
import pandas as pd
from rich.console import Console
from rich.table import Table

run = Path(sys.argv[1])
lat = pd.read_parquet(run / "latency.parquet")
pred = json.loads((run / "predictor.json").read_text())
search = json.loads((run / "search" / "arch.json").read_text())
metrics = pd.read_csv(run / "model" / "metrics.csv")
net = json.loads((run / "model" / "info.json").read_text())
resume = json.loads((run / "resume.json").read_text())
t = search["targets"][0]
dev = f"{lat.device.iloc[0]}: {lat.cpu_model.iloc[0]}, {lat.runtime.iloc[0]} {lat.runtime_version.iloc[0]}"
out = Console(soft_wrap=False)
a = Table(title="the searched arch, at the device config", title_justify="left", show_header=False)
a.add_column(no_wrap=True)
a.add_column()
a.add_row("device", dev)
a.add_row("config", f"{search['space']} {search['params']['macro']} macro, {search['params']['resolution']}x{search['params']['resolution']}, "
          f"{search['params']['num_classes']} classes, batch {lat.batch.iloc[0]}")
a.add_row("archs measured", f"{(lat.status == 'ok').sum()} ok ({lat.latency_ms.min():.2f}-{lat.latency_ms.max():.2f} ms); "
          f"rerun: {resume['measured']} measured, {resume['skipped']} skipped")
d = pred["test"]["default"]
a.add_row("predictor", f"{pred['chosen']}, held-out MAPE {d['mape']:.2%}, Kendall tau {d['kendall_tau']:.3f}")
a.add_row("target", f"{t['target']:g} ms (the predicted median of the sample)")
a.add_row("predicted", f"{t['predicted']:.3f} ms (lambda {t['lambda']:+.3f})")
rounds = "; ".join(f"round {i + 1}: {r['measured']['latency_ms']:.3f} ms ({r['gap']['latency_ms']:+.1%})" for i, r in enumerate(search["verify"]))
if search["verify_status"] == "unverified":
    a.add_row("measured", f"UNVERIFIED: {search['unverified_reason']}" + (f" ({rounds})" if rounds else ""))
else:
    v = search["verify"][-1]
    a.add_row("measured", f"{v['measured']['latency_ms']:.3f} ms, {v['gap']['latency_ms']:+.1%} from target"
              + (f" ({rounds})" if len(search["verify"]) > 1 else ""))
a.add_row("params / MACs", f"{search['params_count'] / 1e6:.2f} M / {search['macs'] / 1e6:.0f} M")
p = net["space_params"]
b = Table(title="the same arch trained on digits", title_justify="left", show_header=False)
b.add_column(no_wrap=True)
b.add_column()
b.add_row("config", f"{net['space']} {p['macro']} macro, {p['resolution']}x{p['resolution']}, {p['num_classes']} classes, width {p['width_mult']:g}")
b.add_row("top-1", f"{metrics.top1.iloc[-1]:.1%} after {len(metrics)} epochs ({metrics.top1.iloc[0]:.1%} after the first), "
          f"{metrics.time_s.sum():.0f} s")
b.add_row("scored on", "digits' 360 held-out images")
b.add_row("params / MACs", f"{net['params'] / 1e6:.2f} M / {net['macs'] / 1e6:.1f} M")
out.print(a)
out.print(b)
files = ["latency.parquet", "predictor.pt", "search/arch.json", "search/search.png", "model/model.pt", "model.onnx", "report.html"]
print("arch:")
print(search["arch"])
print("files:")
print("\n".join(str(run / f) for f in files if (run / f).exists()))
PY
