#!/usr/bin/env bash
# An Android phone over adb, timed with TFLite on its CPU.
#
# Needs: `pip install -e ".[tflite]"` here (the .tflite converter), adb, and a phone with USB
# debugging on. With Python on the phone (e.g. Termux: set [adb] python in profiles/android.toml)
# the agent runs there with LiteRT; without it, TFLite's benchmark_model binary is used (put it
# on the phone's PATH or next to nasctl; the agent pushes it).
set -euo pipefail
RUN=${RUN:-runs/android}
SERIAL=${SERIAL:+--serial $SERIAL}   # several phones attached: pick one (see `adb devices`)
N=${N:-300}
TARGET_MS=${TARGET_MS:-30}

nasctl profile --device android $SERIAL --check
nasctl sample --space proxyless --n "$N" --seed 0 --stratify macs -o "$RUN/archs.parquet"
nasctl profile --device android $SERIAL --archs "$RUN/archs.parquet" -o "$RUN/latency.parquet" ||
    { [ $? -eq 1 ] && nasctl profile --device android $SERIAL --archs "$RUN/archs.parquet" -o "$RUN/latency.parquet" --retry-errors; }
nasctl fit-predictor "$RUN/latency.parquet" -o "$RUN/latency.pt"
nasctl search --predictor "$RUN/latency.pt" --target-ms "$TARGET_MS" --resolution 16 --verify android $SERIAL -o "$RUN/search"
nasctl retrain "$RUN/search/arch.json" --data digits --epochs 10 -o "$RUN/model"
nasctl export "$RUN/model" --format tflite -o "$RUN/model.tflite"
nasctl report "$RUN"
