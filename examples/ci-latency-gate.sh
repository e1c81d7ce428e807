#!/usr/bin/env bash
# Fail a CI job when a model's measured latency exceeds a budget.
#
#   examples/ci-latency-gate.sh ARCH BUDGET_MS [DEVICE]
#
# ARCH: an arch string, or an arch.json / run folder from `nasctl search` or `nasctl retrain`.
# DEVICE: a profile name (default local; e.g. rpi4 or xavier with their [ssh] tables filled in).
# Prints one JSON object on stdout. Exit 0 within budget, 1 over it (or measuring failed twice),
# 2 bad input, 3 device unreachable: nasctl's own codes, passed through.
set -uo pipefail
if [ $# -lt 2 ]; then
    echo "usage: $0 ARCH BUDGET_MS [DEVICE]" >&2
    exit 2
fi
ARCH=$1 BUDGET=$2 DEVICE=${3:-local}
ROWS=$(mktemp -d)/gate.csv
trap 'rm -rf "$(dirname "$ROWS")"' EXIT

nasctl profile --device "$DEVICE" --arch "$ARCH" -o "$ROWS" --json -q >/dev/null
rc=$?
if [ $rc -eq 1 ]; then  # disturbed by other load while timing: measure once more
    nasctl profile --device "$DEVICE" --arch "$ARCH" -o "$ROWS" --retry-errors --json -q >/dev/null
    rc=$?
fi
[ $rc -eq 0 ] || exit $rc

python - "$ROWS" "$BUDGET" <<'PY'
import json
import sys

import pandas as pd

row, budget = pd.read_csv(sys.argv[1]).iloc[-1], float(sys.argv[2])
ok = bool(row.latency_ms <= budget)
print(json.dumps({"arch": row.arch, "device": row.device, "latency_ms": float(row.latency_ms),
                  "latency_ci_ms": [float(row.latency_ci_lo_ms), float(row.latency_ci_hi_ms)],
                  "budget_ms": budget, "ok": ok}))
if not ok:
    print(f"latency gate: {row.latency_ms:.3f} ms on {row.device} exceeds the {budget:g} ms budget", file=sys.stderr)
sys.exit(0 if ok else 1)
PY
