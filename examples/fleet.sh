#!/usr/bin/env bash
# Several boards of one kind at once: each takes the next model as soon as it is free, so a
# fleet of four measures about four times as fast, and the rows are one table (the `host`
# column says which board timed each). Boards must be the same kind (CPU, runtime version):
# nasctl refuses to mix them in one device config.
#
#   HOSTS="pi@pi-1 pi@pi-2 pi@pi-3" examples/fleet.sh          # Raspberry Pis over SSH
#   SERIALS="R58M123 R58M456" DEVICE=android examples/fleet.sh   # phones over adb
set -euo pipefail
RUN=${RUN:-runs/fleet}
DEVICE=${DEVICE:-rpi4}
N=${N:-1000}
args=()
for h in ${HOSTS:-}; do args+=(--host "$h"); done
for s in ${SERIALS:-}; do args+=(--serial "$s"); done
if [ ${#args[@]} -eq 0 ]; then
    echo "set HOSTS (SSH boards) or SERIALS (adb phones)" >&2
    exit 2
fi

nasctl profile --device "$DEVICE" "${args[@]}" --check
nasctl sample --space proxyless --n "$N" --seed 0 --stratify macs -o "$RUN/archs.parquet"
nasctl profile --device "$DEVICE" "${args[@]}" --archs "$RUN/archs.parquet" -o "$RUN/latency.parquet" ||
    { [ $? -eq 1 ] && nasctl profile --device "$DEVICE" "${args[@]}" --archs "$RUN/archs.parquet" -o "$RUN/latency.parquet" --retry-errors; }
python -c "import pandas as pd, sys; print(pd.read_parquet(sys.argv[1]).groupby('host').latency_ms.describe())" "$RUN/latency.parquet"
nasctl fit-predictor "$RUN/latency.parquet" -o "$RUN/latency.pt"
