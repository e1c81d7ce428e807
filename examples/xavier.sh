#!/usr/bin/env bash
# The real Jetson AGX Xavier flow (LightNAS's setting: TensorRT fp16, MAXN, batch 8).
#
# Before: edit profiles/xavier.toml ([ssh] host/user, or pass HOST=user@address), put your key in
# the ssh-agent, and check the board: `nasctl profile --device xavier --check`. The agent needs
# python3 and trtexec (JetPack ships both); nasctl sets MAXN with nvpmodel when sudo allows it,
# and refuses to time in another power mode.
set -euo pipefail
RUN=${RUN:-runs/xavier}
HOST=${HOST:+--host $HOST}
N=${N:-1000}             # LightNAS fits its predictor on 10k measured archs; 1k is a good start
TARGET_MS=${TARGET_MS:-24}
DATA=${DATA:-imagefolder:/data/imagenet100}

nasctl profile --device xavier $HOST --check
nasctl sample --space proxyless --n "$N" --seed 0 --stratify macs -o "$RUN/archs.parquet"
# Rows stream back as they are measured; a cut link reconnects and resumes, a rerun skips what is done.
nasctl profile --device xavier $HOST --archs "$RUN/archs.parquet" -o "$RUN/latency.parquet" ||
    { [ $? -eq 1 ] && nasctl profile --device xavier $HOST --archs "$RUN/archs.parquet" -o "$RUN/latency.parquet" --retry-errors; }
nasctl fit-predictor "$RUN/latency.parquet" --metric latency_ms -o "$RUN/latency.pt"
nasctl fit-predictor "$RUN/latency.parquet" --metric energy_mj -o "$RUN/energy.pt"   # INA3221 rails
# One search to the target, on the local GPU if there is one; verified on the board.
nasctl search --predictor "$RUN/latency.pt" --target-ms "$TARGET_MS" --data "$DATA" --width-mult 1.0 \
    --epochs 90 --warmup-epochs 10 --verify xavier $HOST -o "$RUN/search"
nasctl retrain "$RUN/search/arch.json" --data "$DATA" --epochs 150 -o "$RUN/model"
nasctl export "$RUN/model" --format onnx -o "$RUN/model.onnx"
nasctl export "$RUN/model" --format trt --device xavier $HOST -o "$RUN/model.engine"   # built on the board
nasctl report "$RUN"
